"""The OpenAPI document's field schemas say what the validator says (issue 17, item 17).

Schemathesis found the request schema accepting bodies the door refuses (NIK
`0000000000000000`, name `0`). The document's patterns come from
intake/schema_patterns.py; here each field's schema, as the document has it, is run
beside the validator on the same values: schema-valid implies valid, and valid
implies schema-valid except where the description says the schema cannot follow.
"""

from __future__ import annotations

import datetime
import json
import unicodedata
from importlib import resources
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS31Validator

from intake import nik
from intake.schema_patterns import email_pattern, name_patterns, nik_pattern
from intake.validation import FieldInvalid, normalise_email, normalise_name

DOCUMENT: Final[dict[str, Any]] = json.loads(
    resources.files("intake").joinpath("openapi.json").read_text(encoding="utf-8")
)
FIELDS: Final = DOCUMENT["components"]["schemas"]["RegistrationRequest"]["properties"]
# The Unicode version the document's name patterns were built with (Python 3.11's).
UNICODE_VERSION: Final = "14.0.0"
TODAY: Final = datetime.date(2026, 6, 1)


VALIDATORS: Final = {field: OAS31Validator(schema) for field, schema in FIELDS.items()}


def schema_accepts(field: str, value: str) -> bool:
    return bool(VALIDATORS[field].is_valid(value))


def nik_is_valid(value: str) -> bool:
    return isinstance(nik.nik_birth_date(value, TODAY), datetime.date)


def name_is_valid(value: str) -> bool:
    try:
        normalise_name(value)
    except FieldInvalid:
        return False
    return True


def email_is_valid(value: str) -> bool:
    try:
        normalise_email(value)
    except FieldInvalid:
        return False
    return True


def test_the_document_holds_the_patterns_built_from_the_validator() -> None:
    assert FIELDS["nik"]["pattern"] == nik_pattern()
    assert FIELDS["email"]["pattern"] == email_pattern()
    if unicodedata.unidata_version != UNICODE_VERSION:
        pytest.skip(f"the name patterns list Unicode {UNICODE_VERSION}'s letters")
    shape, letter = name_patterns()
    assert FIELDS["full_name"]["pattern"] == shape
    assert FIELDS["full_name"]["allOf"] == [{"pattern": letter}]


@pytest.mark.parametrize(("field", "value"), [
    ("nik", "0000000000000000"), ("full_name", "0"), ("nik", "3171234501900000"),
    ("nik", "3171232902010001"), ("full_name", " "), ("full_name", "a\tb"),
    ("full_name", "a" * 101), ("email", '"a b"@example.com'), ("email", "a@[127.0.0.1]"),
    ("birth_date", "0000-01-01"),
])
def test_what_schemathesis_found_and_its_kin_are_schema_invalid(field: str, value: str) -> None:
    assert not schema_accepts(field, value)


niks = st.builds(
    lambda province, rest, date, serial: province + rest + date + serial,
    st.sampled_from(sorted(nik.PROVINCE_CODES)) | st.text("0123456789", min_size=2, max_size=2),
    st.text("0123456789", min_size=4, max_size=4) | st.just("0001") | st.just("0100"),
    st.dates(datetime.date(1927, 1, 1), datetime.date(2026, 12, 31)).map(
        lambda d: f"{d.day:02d}{d.month:02d}{d.year % 100:02d}")
    | st.text("0123456789", min_size=6, max_size=6),
    st.text("0123456789", min_size=4, max_size=4) | st.just("0000"),
)


@settings(max_examples=1000, deadline=None)
@given(niks)
def test_a_nik_is_schema_valid_exactly_when_it_is_valid(value: str) -> None:
    assert schema_accepts("nik", value) == nik_is_valid(value)


# Letters and marks of several scripts, the punctuation, spaces and other white space,
# and what the rules refuse (digits, symbols, a character NFC changes).
NAME_ALPHABET: Final = "aZéñßİ\u0131ŁΩЖ中ひ한\u0301\u0323\u093c .'-\t\n\u00a0\u3000\u00850_!@\u2126"
names = st.text(NAME_ALPHABET, max_size=110) | st.text(max_size=20)


@settings(max_examples=1000, deadline=None)
@given(names)
def test_a_name_is_schema_valid_exactly_when_it_is_valid(value: str) -> None:
    if unicodedata.unidata_version != UNICODE_VERSION:
        pytest.skip(f"the name patterns list Unicode {UNICODE_VERSION}'s letters")
    accepted = schema_accepts("full_name", value)
    if accepted:
        assert name_is_valid(value)
    elif name_is_valid(value):
        # The one gap the description names: a character NFC changes.
        assert any(unicodedata.normalize("NFC", c) != c for c in value)


emails = st.emails() | st.text("ab.@-_+\"[] 1é", max_size=30) | st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text("ab.1-", min_size=1, max_size=70), st.text("ab.1-", min_size=1, max_size=200))


@settings(max_examples=1000, deadline=None)
@given(emails)
def test_an_email_is_schema_valid_exactly_when_it_is_valid(value: str) -> None:
    assert schema_accepts("email", value) == email_is_valid(value)
