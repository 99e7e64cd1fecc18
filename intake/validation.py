"""The field rules of a registration (docs/api.md, check 5): pure code, no I/O.

Every field is checked and every failure reported, one code per field, so
the web form can mark all of them at once. A valid body comes back as the
`PersonalData` the door seals, its values normalised.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Callable
from typing import Any, Final

from intake.nik import NIK_CODES, nik_birth_date
from intake.registration_body import RegistrationBody
from queueing.envelope import PersonalData

REQUIRED: Final = "required"
WRONG_TYPE: Final = "wrong_type"
UNKNOWN_FIELD: Final = "unknown_field"
INVALID_FORMAT: Final = "invalid_format"
TOO_SHORT: Final = "too_short"
TOO_LONG: Final = "too_long"
INVALID_CHARACTERS: Final = "invalid_characters"
INVALID_DATE: Final = "invalid_date"
BIRTH_DATE_MISMATCH: Final = "birth_date_mismatch"
UNDERAGE: Final = "underage"
MUST_BE_TRUE: Final = "must_be_true"

# The one key that stands for every field name not in KNOWN_FIELDS: a client's own key
# names are never quoted back (an email address typed into a key would be).
UNKNOWN: Final = "_unknown"

_ANY_FIELD: Final = (REQUIRED, WRONG_TYPE)
# Every code each field can get, for the OpenAPI document and its test.
FIELD_CODES: Final[dict[str, frozenset[str]]] = {
    "body": frozenset({WRONG_TYPE}),
    UNKNOWN: frozenset({UNKNOWN_FIELD}),
    "nik": frozenset({*_ANY_FIELD, *NIK_CODES}),
    "full_name": frozenset({*_ANY_FIELD, TOO_SHORT, TOO_LONG, INVALID_CHARACTERS}),
    "email": frozenset({*_ANY_FIELD, INVALID_FORMAT, TOO_LONG}),
    "phone": frozenset({*_ANY_FIELD, INVALID_FORMAT}),
    "birth_date": frozenset({*_ANY_FIELD, INVALID_DATE, BIRTH_DATE_MISMATCH, UNDERAGE}),
    "consent": frozenset({*_ANY_FIELD, MUST_BE_TRUE}),
}
KNOWN_FIELDS: Final = ("nik", "full_name", "email", "phone", "birth_date", "consent")
_KNOWN_FIELD_SET: Final = frozenset(KNOWN_FIELDS)
# The order of a 422's `fields`: unknown keys first, then the fields in the order they are checked.
_REPORT_ORDER: Final = (UNKNOWN, *KNOWN_FIELDS)

NAME_MAX_CODE_POINTS: Final = 100
EMAIL_MAX_LENGTH: Final = 254
ADULT_AGE: Final = 18

_SPACE_RUNS = re.compile(" {2,}")
_ASCII_NAME = re.compile(r"[A-Za-z .'\-]+")
_NAME_PUNCTUATION: Final = frozenset(" .'-")
# RFC 5322 dot-atom: atext runs separated by single dots.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# Host names: LDH labels of 1-63 characters, no hyphen at either end, two or more.
_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
_PHONE_SEPARATORS = str.maketrans("", "", " -")
_PHONE = re.compile(r"(?:0|62|\+62)(8[0-9]{8,11})")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def validate_registration(body: object, today: datetime.date) -> PersonalData | dict[str, str]:
    """The normalised registration, or one field code per failing field.

    `body` is a `RegistrationBody` (the typed fast path) or any decoded JSON
    value. `today` is the date of submission in Asia/Jakarta, for the age
    rule and the NIK's century.
    """
    if isinstance(body, RegistrationBody):
        # The decoder checked presence, types and unknown keys: only the field rules remain.
        return _field_rules(body.nik, body.full_name, body.email, body.phone, body.birth_date,
                            body.consent, {}, today)
    if not isinstance(body, dict):
        return {"body": WRONG_TYPE}
    failures: dict[str, str] = {}
    if not _KNOWN_FIELD_SET.issuperset(body):
        failures[UNKNOWN] = UNKNOWN_FIELD
    consent = body.get("consent")
    if "consent" not in body:
        failures["consent"] = REQUIRED
    elif not isinstance(consent, bool):
        failures["consent"] = WRONG_TYPE
    return _field_rules(
        _string(body, "nik", failures), _string(body, "full_name", failures),
        _string(body, "email", failures), _string(body, "phone", failures),
        _string(body, "birth_date", failures), consent if isinstance(consent, bool) else None,
        failures, today,
    )


def _field_rules(
    nik: str | None,
    full_name: str | None,
    email: str | None,
    phone: str | None,
    birth_text: str | None,
    consent: bool | None,
    failures: dict[str, str],
    today: datetime.date,
) -> PersonalData | dict[str, str]:
    """The rules of each field's value, in the contract's order; None: the field already failed."""
    nik_date: datetime.date | None = None
    if nik is not None:
        parsed = nik_birth_date(nik, today)
        if isinstance(parsed, str):
            failures["nik"] = parsed
        else:
            nik_date = parsed

    name = _normalised(full_name, "full_name", normalise_name, failures)
    address = _normalised(email, "email", normalise_email, failures)
    mobile = _normalised(phone, "phone", normalise_phone, failures)

    birth_date: datetime.date | None = None
    if birth_text is not None:
        checked = check_birth_date(birth_text, nik_date, today)
        if isinstance(checked, str):
            failures["birth_date"] = checked
        else:
            birth_date = checked

    if consent is False:
        failures["consent"] = MUST_BE_TRUE

    if failures:
        # The generic path records presence and type failures before the rules:
        # report them all in the one order the contract's checks run in.
        return {field: failures[field] for field in _REPORT_ORDER if field in failures}
    # Every value is set once no field failed; the asserts tell mypy so.
    assert nik is not None and name is not None and address is not None
    assert mobile is not None and birth_date is not None
    return PersonalData(nik, name, address, mobile, birth_date)


def unknown_field_count(body: object) -> int:
    """How many of the body's keys are not the contract's fields (the 422's `unknown_fields`)."""
    # A RegistrationBody has none: the decoder refuses a key it does not know.
    if not isinstance(body, dict):
        return 0
    return sum(1 for name in body if name not in _KNOWN_FIELD_SET)


class FieldInvalid(ValueError):
    """A field value breaks a rule; `code` is the contract's field code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def normalise_name(raw: str) -> str:
    """The stored form of a full name; FieldInvalid names the rule it breaks."""
    name = _SPACE_RUNS.sub(" ", unicodedata.normalize("NFC", raw).strip())
    if not name:
        raise FieldInvalid(TOO_SHORT)
    if len(name) > NAME_MAX_CODE_POINTS:
        raise FieldInvalid(TOO_LONG)
    if name.isascii():
        # The common case, without a per-character Unicode lookup.
        valid = _ASCII_NAME.fullmatch(name) is not None and any(c.isalpha() for c in name)
    else:
        valid = _is_unicode_name(name)
    if not valid:
        raise FieldInvalid(INVALID_CHARACTERS)
    return name


def normalise_email(raw: str) -> str:
    """The stored (lower-cased) form of an email address; FieldInvalid if invalid."""
    if len(raw) > EMAIL_MAX_LENGTH:
        raise FieldInvalid(TOO_LONG)
    local, at, domain = raw.rpartition("@")
    if (
        not at
        or not raw.isascii()
        or _DOT_ATOM.fullmatch(local) is None
        or _DOMAIN.fullmatch(domain) is None
    ):
        raise FieldInvalid(INVALID_FORMAT)
    return raw.lower()


def normalise_phone(raw: str) -> str:
    """The stored `+628…` form of an Indonesian mobile number; FieldInvalid if invalid."""
    digits = raw.translate(_PHONE_SEPARATORS)
    match = _PHONE.fullmatch(digits) if digits.isascii() else None
    if match is None:
        raise FieldInvalid(INVALID_FORMAT)
    return "+62" + match.group(1)


def check_birth_date(
    raw: str, nik_date: datetime.date | None, today: datetime.date
) -> datetime.date | str:
    """The birth date, or the code of the first rule it breaks.

    `nik_date` is the date a valid NIK encodes, None when the NIK is invalid:
    a mismatch with a broken NIK would report one mistake twice.
    """
    if _ISO_DATE.fullmatch(raw) is None:
        return INVALID_DATE
    try:
        born = datetime.date.fromisoformat(raw)
    except ValueError:
        return INVALID_DATE
    if nik_date is not None and (
        born.day != nik_date.day
        or born.month != nik_date.month
        or born.year % 100 != nik_date.year % 100  # the NIK carries no century
    ):
        return BIRTH_DATE_MISMATCH
    # A date still to come is underage too; checked first, as the eighteenth
    # birthday of a year past 9981 is not a date Python can hold.
    if born > today or today < adulthood(born):
        return UNDERAGE
    return born


def adulthood(born: datetime.date) -> datetime.date:
    """The day someone born on `born` turns 18; 1 March for 29 February in a common year."""
    year = born.year + ADULT_AGE
    try:
        return born.replace(year=year)
    except ValueError:
        return datetime.date(year, 3, 1)


def _is_unicode_name(name: str) -> bool:
    has_letter = False
    for char in name:
        category = unicodedata.category(char)
        if category[0] == "L":
            has_letter = True
        elif category[0] != "M" and char not in _NAME_PUNCTUATION:
            return False
    return has_letter


def _string(body: dict[str, Any], name: str, failures: dict[str, str]) -> str | None:
    if name not in body:
        failures[name] = REQUIRED
        return None
    value = body[name]
    if not isinstance(value, str):
        failures[name] = WRONG_TYPE
        return None
    return value


def _normalised(
    value: str | None,
    name: str,
    normalise: Callable[[str], str],
    failures: dict[str, str],
) -> str | None:
    if value is None:
        return None
    try:
        return normalise(value)
    except FieldInvalid as invalid:
        failures[name] = invalid.code
        return None
