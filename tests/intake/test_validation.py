"""The field rules of a registration: table tests and properties."""

from __future__ import annotations

import datetime
import string
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intake.validation import (
    FIELD_CODES,
    KNOWN_FIELDS,
    adulthood,
    normalise_email,
    normalise_name,
    normalise_phone,
    validate_registration,
)
from loadtest.registrants import RegistrantFactory
from queueing.envelope import PersonalData
from tests.support import FULL_WIDTH

TODAY = datetime.date(2026, 11, 22)
# A woman born 5 June 1999: NIK day 45.
VALID: dict[str, Any] = {
    "nik": "3201014506990001",
    "full_name": "Siti Nurhaliza",
    "email": "siti@example.co.id",
    "phone": "081234567890",
    "birth_date": "1999-06-05",
    "consent": True,
}


def failures(**changes: Any) -> dict[str, str]:
    body = {**VALID, **changes}
    result = validate_registration({k: v for k, v in body.items() if v is not ...}, TODAY)
    assert isinstance(result, dict), "expected the body to fail"
    return result


def codes_of(field: str, value: Any) -> str | None:
    result = validate_registration({**VALID, field: value}, TODAY)
    return None if isinstance(result, PersonalData) else result.get(field)


def test_the_valid_body_is_normalised() -> None:
    result = validate_registration(
        {**VALID, "full_name": "  Siti   Nurhaliza ", "email": "Siti@Example.CO.ID",
         "phone": "0812-3456 7890"},
        TODAY,
    )
    assert isinstance(result, PersonalData)
    assert result.nik == VALID["nik"]
    assert result.full_name == "Siti Nurhaliza"
    assert result.email == "siti@example.co.id"
    assert result.phone == "+6281234567890"
    assert result.birth_date == datetime.date(1999, 6, 5)


def test_registration_repr_hides_personal_data() -> None:
    result = validate_registration(VALID, TODAY)
    assert isinstance(result, PersonalData)
    for value in ("3201014506990001", "Siti", "siti@", "+62812"):
        assert value not in repr(result)
        assert value not in str(result)


@pytest.mark.parametrize("body", [None, [], [VALID], "x", 1, 1.5, True])
def test_a_body_that_is_not_an_object_is_wrong_type(body: Any) -> None:
    assert validate_registration(body, TODAY) == {"body": "wrong_type"}


def test_an_empty_object_names_every_field_as_required() -> None:
    assert validate_registration({}, TODAY) == dict.fromkeys(KNOWN_FIELDS, "required")


def test_every_failure_is_reported_at_once() -> None:
    assert failures(nik="1", full_name="", email="x", phone="1", birth_date="1999-13-01",
                    consent=False, extra=1) == {
        "nik": "invalid_format", "full_name": "too_short", "email": "invalid_format",
        "phone": "invalid_format", "birth_date": "invalid_date", "consent": "must_be_true",
        "_unknown": "unknown_field",
    }


@pytest.mark.parametrize("field", KNOWN_FIELDS)
@pytest.mark.parametrize("value", [None, 1, 1.0, [], {}])
def test_values_of_the_wrong_json_type(field: str, value: Any) -> None:
    assert codes_of(field, value) == "wrong_type"


@pytest.mark.parametrize("field", ["nik", "full_name", "email", "phone", "birth_date"])
def test_a_boolean_is_not_a_string(field: str) -> None:
    assert codes_of(field, True) == "wrong_type"


@pytest.mark.parametrize(("value", "code"), [
    (True, None), (False, "must_be_true"), (1, "wrong_type"), ("true", "wrong_type"),
    (None, "wrong_type"),
])
def test_consent(value: Any, code: str | None) -> None:
    assert codes_of("consent", value) == code


def test_unknown_fields_are_reported_under_one_key() -> None:
    assert failures(middle_name="x", Nik="y") == {"_unknown": "unknown_field"}


@pytest.mark.parametrize(("nik", "code"), [
    ("3201014506990000", "invalid_serial"),
    ("2001014506990001", "invalid_region"),
    ("320101450699001", "invalid_format"),
    ("3201017306990001", "invalid_date"),
])
def test_nik_codes_reach_the_field(nik: str, code: str) -> None:
    # The birth date is not also called a mismatch when the NIK itself is wrong.
    assert failures(nik=nik) == {"nik": code}


@pytest.mark.parametrize(("raw", "stored"), [
    ("Siti", "Siti"),
    ("  Ni   Luh  Putu ", "Ni Luh Putu"),
    ("Nur'aini Al-Hakim", "Nur'aini Al-Hakim"),
    ("St. Maria", "St. Maria"),
    ("Séno", "Séno"),
    ("Se\u0301no", "Séno"),  # decomposed é becomes one code point
    ("Ngũgĩ", "Ngũgĩ"),
    ("ญาดา", "ญาดา"),  # Thai: letters and combining marks
    ("王小明", "王小明"),
    ("a" * 100, "a" * 100),
    ("e\u0301" * 100, "é" * 100),  # 200 code points raw, 100 after NFC
    (" " + "a" * 100 + "  ", "a" * 100),
])
def test_valid_names_are_normalised(raw: str, stored: str) -> None:
    assert normalise_name(raw) == stored


@pytest.mark.parametrize(("raw", "code"), [
    ("", "too_short"),
    ("   ", "too_short"),
    ("a" * 101, "too_long"),
    ("Budi 2", "invalid_characters"),
    ("Budi_Santoso", "invalid_characters"),
    ("Budi\tSantoso", "invalid_characters"),
    ("Budi\nSantoso", "invalid_characters"),
    ("...", "invalid_characters"),
    ("-' .", "invalid_characters"),
    ("\u0301", "invalid_characters"),  # a mark alone is no letter
    ("Budi 😀", "invalid_characters"),
    ("Budi<script>", "invalid_characters"),
    ("Budi\u200bSantoso", "invalid_characters"),  # zero-width space
])
def test_invalid_names(raw: str, code: str) -> None:
    assert codes_of("full_name", raw) == code


@pytest.mark.parametrize(("raw", "stored"), [
    ("siti@example.com", "siti@example.com"),
    ("Siti.Aminah@Example.CO.ID", "siti.aminah@example.co.id"),
    ("a+tag@b.co", "a+tag@b.co"),
    ("o'brien@mail-host.example.org", "o'brien@mail-host.example.org"),
    ("{x}|y~!#$%&*=?^`@a.b", "{x}|y~!#$%&*=?^`@a.b"),
    ("a@" + "b" * 63 + ".id", "a@" + "b" * 63 + ".id"),
])
def test_valid_emails_are_lower_cased(raw: str, stored: str) -> None:
    assert normalise_email(raw) == stored


@pytest.mark.parametrize(("raw", "code"), [
    ("siti", "invalid_format"),
    ("siti@", "invalid_format"),
    ("@example.com", "invalid_format"),
    ("siti@localhost", "invalid_format"),  # one label
    ("siti@example..com", "invalid_format"),
    ("siti@.example.com", "invalid_format"),
    ("siti@example.com.", "invalid_format"),
    ("siti@-example.com", "invalid_format"),
    ("siti@example-.com", "invalid_format"),
    ("siti@exa_mple.com", "invalid_format"),
    ("siti@" + "b" * 64 + ".id", "invalid_format"),  # label over 63
    (".siti@example.com", "invalid_format"),
    ("siti.@example.com", "invalid_format"),
    ("si..ti@example.com", "invalid_format"),
    ("si ti@example.com", "invalid_format"),
    ('"siti"@example.com', "invalid_format"),  # quoted strings are no dot-atom
    ("siti@b@example.com", "invalid_format"),
    ("sití@example.com", "invalid_format"),  # not ASCII
    ("siti@exämple.com", "invalid_format"),
    ("siti@example.com\n", "invalid_format"),
    ("a" * 243 + "@example.com", "too_long"),  # 255 characters
])
def test_invalid_emails(raw: str, code: str) -> None:
    assert codes_of("email", raw) == code


def test_email_of_exactly_254_characters_is_valid() -> None:
    raw = "a" * 242 + "@example.com"
    assert len(raw) == 254
    assert normalise_email(raw) == raw


@pytest.mark.parametrize(("raw", "stored"), [
    ("081234567890", "+6281234567890"),
    ("6281234567890", "+6281234567890"),
    ("+6281234567890", "+6281234567890"),
    ("0812 3456 7890", "+6281234567890"),
    ("+62 812-3456-7890", "+6281234567890"),
    (" 0812-345-678 ", "+62812345678"),  # 9 digits from the 8 on
    ("08" + "1" * 11, "+628" + "1" * 11),  # 12 digits from the 8 on
])
def test_valid_phones_are_stored_as_plus_62(raw: str, stored: str) -> None:
    assert normalise_phone(raw) == stored


@pytest.mark.parametrize("raw", [
    "", "081234567",  # 8 digits from the 8 on
    "08" + "1" * 12,  # 13 digits from the 8 on
    "0712345678", "6212345678", "+6212345678", "62081234567", "+62 0812345678",
    "0062812345678", "+0812345678", "812345678", "0812.3456.7890", "(0812) 34567890",
    "0812345678a", "08123456789".translate(FULL_WIDTH),  # full-width digits
    "0812\t3456789",
])
def test_invalid_phones(raw: str) -> None:
    assert codes_of("phone", raw) == "invalid_format"


@pytest.mark.parametrize(("raw", "code"), [
    ("1999-06-05", None),
    ("1999-6-5", "invalid_date"),
    ("05-06-1999", "invalid_date"),
    ("1999/06/05", "invalid_date"),
    ("1999-06-05T00:00:00", "invalid_date"),
    ("19990605", "invalid_date"),
    ("1999-06-31", "invalid_date"),
    ("1999-02-29", "invalid_date"),
    ("0000-06-05", "invalid_date"),
    ("\uff11\uff19\uff19\uff19-06-05", "invalid_date"),
    ("1999-06-06", "birth_date_mismatch"),
    ("1999-07-05", "birth_date_mismatch"),
    ("1998-06-05", "birth_date_mismatch"),
    ("1899-06-05", None),  # the NIK carries the year modulo 100 only
])
def test_birth_dates(raw: str, code: str | None) -> None:
    assert codes_of("birth_date", raw) == code


def test_birth_date_is_compared_with_the_womans_day_minus_40() -> None:
    assert codes_of("birth_date", "1999-06-45") == "invalid_date"
    assert failures(nik="3201010506990001", birth_date="1999-06-06") == {
        "birth_date": "birth_date_mismatch"}


def nik_for(born: datetime.date) -> str:
    return f"320101{born.day:02d}{born.month:02d}{born.year % 100:02d}0001"


@pytest.mark.parametrize(("born", "today", "adult"), [
    (datetime.date(2008, 11, 22), TODAY, True),  # 18 today
    (datetime.date(2008, 11, 23), TODAY, False),  # 18 tomorrow
    (datetime.date(2008, 2, 29), datetime.date(2026, 2, 28), False),
    (datetime.date(2008, 2, 29), datetime.date(2026, 3, 1), True),
    (datetime.date(2004, 2, 29), datetime.date(2022, 2, 28), False),
    (datetime.date(2004, 2, 29), datetime.date(2022, 3, 1), True),
    (datetime.date(2010, 2, 28), datetime.date(2028, 2, 28), True),
    (datetime.date(2010, 2, 28), datetime.date(2028, 2, 27), False),
    (datetime.date(2030, 1, 1), TODAY, False),  # not yet born
    # Eighteenth birthdays past year 9999 (found by schemathesis: it was a 500).
    (datetime.date(9987, 11, 15), TODAY, False),
    (datetime.date(9999, 12, 31), TODAY, False),
])
def test_age_is_18_on_the_day_of_submission(
    born: datetime.date, today: datetime.date, adult: bool
) -> None:
    body = {**VALID, "nik": nik_for(born), "birth_date": born.isoformat()}
    result = validate_registration(body, today)
    assert isinstance(result, PersonalData) == adult
    if not adult:
        assert result == {"birth_date": "underage"}


def test_underage_is_reported_even_when_the_nik_is_broken() -> None:
    assert failures(nik="x", birth_date="2010-01-01") == {
        "nik": "invalid_format", "birth_date": "underage"}


def test_field_codes_cover_every_code_the_validator_returns() -> None:
    assert set(FIELD_CODES) == {"body", "_unknown", *KNOWN_FIELDS}


# --- properties ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(KNOWN_FIELDS) | st.text(max_size=12)


@given(st.dictionaries(field_names, json_values, max_size=8))
def test_any_json_object_gets_a_registration_or_codes_per_field(body: dict[str, Any]) -> None:
    result = validate_registration(body, TODAY)
    if isinstance(result, PersonalData):
        return
    assert result
    for field, code in result.items():
        assert field in KNOWN_FIELDS or field == "_unknown"
        expected = FIELD_CODES[field]
        assert code in expected
    for field in KNOWN_FIELDS:
        if field not in body:
            assert result[field] == "required"


@given(st.integers(0, 10**6))
def test_every_made_up_registrant_is_valid(seed: int) -> None:
    registrant = RegistrantFactory(seed=seed, today=TODAY).make()
    result = validate_registration(registrant.body(), TODAY)
    assert isinstance(result, PersonalData)
    assert result.birth_date == registrant.birth_date


@given(st.dates(datetime.date(1900, 1, 1), datetime.date(2100, 12, 31)),
       st.dates(datetime.date(1900, 1, 1), datetime.date(2100, 12, 31)))
def test_adulthood_agrees_with_counting_birthdays(
    born: datetime.date, today: datetime.date
) -> None:
    # Whole years lived: the birthday this year counts once (month, day) is reached,
    # which puts a 29 February birthday on 1 March in common years.
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    assert (today >= adulthood(born)) == (years >= 18)


name_text = st.text(
    st.characters(categories=("L", "M", "Zs", "P", "N", "Cc")), max_size=120
)


@given(name_text)
def test_a_valid_name_is_a_fixed_point_of_normalisation(raw: str) -> None:
    try:
        name = normalise_name(raw)
    except ValueError:
        return
    assert normalise_name(name) == name
    assert name == name.strip() and "  " not in name
    assert 1 <= len(name) <= 100
    assert any(char.isalpha() for char in name)


separators = st.lists(st.sampled_from(["", " ", "-", " - "]), min_size=14, max_size=14)


@given(st.sampled_from(["0", "62", "+62"]), st.text(string.digits, min_size=8, max_size=11),
       separators)
def test_phone_separators_do_not_change_the_stored_number(
    prefix: str, rest: str, gaps: list[str]
) -> None:
    digits = prefix + "8" + rest
    spaced = "".join(gap + char for gap, char in zip(gaps, digits, strict=False))
    spaced += digits[len(gaps):]
    assert normalise_phone(spaced) == "+628" + rest


@given(st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9+_-]{1,8}){0,2}@[a-z]{1,10}\.(com|co\.id|id)",
                     fullmatch=True))
def test_email_case_does_not_matter(address: str) -> None:
    assert normalise_email(address.upper()) == normalise_email(address) == address


def test_registrants_can_be_made_on_29_february() -> None:
    leap_day = datetime.date(2028, 2, 29)
    registrant = RegistrantFactory(seed=1, today=leap_day).make()
    assert isinstance(validate_registration(registrant.body(), leap_day), PersonalData)


# --- an independent oracle of the contract's rules (docs/api.md, check 5) ---------------------
# Written from the contract's table, without the validator's helpers, so a rule the
# validator gets wrong disagrees with it.

ORACLE_PROVINCES = {11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 31, 32, 33, 34, 35, 36, 51, 52, 53,
                    61, 62, 63, 64, 65, 71, 72, 73, 74, 75, 76, 81, 82, 91, 92, 93, 94, 95, 96}
ASCII_DIGITS = "0123456789"
ATEXT = set(string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-")
LDH = set(string.ascii_letters + string.digits + "-")


def oracle_date(year: int, month: int, day: int) -> datetime.date | None:
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def oracle_nik(value: str) -> tuple[str | None, tuple[int, int, int] | None]:
    """(code, (day, month, yy)) for a NIK string, as the contract's table reads."""
    if len(value) != 16 or any(c not in ASCII_DIGITS for c in value):
        return "invalid_format", None
    if int(value[:2]) not in ORACLE_PROVINCES or value[2:4] == "00" or value[4:6] == "00":
        return "invalid_region", None
    day, month, yy = int(value[6:8]), int(value[8:10]), int(value[10:12])
    if day > 40:
        day -= 40
    # The NIK's year is the latest with these two digits not after the submission's year.
    year = 2000 + yy if 2000 + yy <= TODAY.year else 1900 + yy
    if oracle_date(year, month, day) is None:
        return "invalid_date", None
    if value[12:] == "0000":
        return "invalid_serial", None
    return None, (day, month, yy)


def oracle_name(value: str) -> str | None:
    name = unicodedata.normalize("NFC", value).strip()
    while "  " in name:
        name = name.replace("  ", " ")
    if not name:
        return "too_short"
    if len(name) > 100:
        return "too_long"
    allowed = all(unicodedata.category(c)[0] in "LM" or c in " .'-" for c in name)
    has_letter = any(unicodedata.category(c)[0] == "L" for c in name)
    return None if allowed and has_letter else "invalid_characters"


def oracle_email(value: str) -> str | None:
    if len(value) > 254:
        return "too_long"
    if not value.isascii() or "@" not in value:
        return "invalid_format"
    local, domain = value.rsplit("@", 1)
    atoms, labels = local.split("."), domain.split(".")
    local_ok = all(atom and set(atom) <= ATEXT for atom in atoms)
    domain_ok = len(labels) >= 2 and all(
        0 < len(label) <= 63 and set(label) <= LDH and label[0] != "-" and label[-1] != "-"
        for label in labels
    )
    return None if local_ok and domain_ok else "invalid_format"


def oracle_phone(value: str) -> str | None:
    digits = value.replace(" ", "").replace("-", "")
    for prefix in ("+62", "62", "0"):
        if digits.startswith(prefix + "8"):
            rest = digits[len(prefix):]
            if 9 <= len(rest) <= 12 and all(c in ASCII_DIGITS for c in rest):
                return None
    return "invalid_format"


def oracle_birth_date(value: str, nik_date: tuple[int, int, int] | None) -> str | None:
    parts = value.split("-")
    if (len(value) != 10 or [len(p) for p in parts] != [4, 2, 2]
            or any(c not in ASCII_DIGITS for p in parts for c in p)):
        return "invalid_date"
    year, month, day = (int(p) for p in parts)
    if oracle_date(year, month, day) is None:
        return "invalid_date"
    if nik_date is not None and nik_date != (day, month, year % 100):
        return "birth_date_mismatch"
    # Eighteenth birthday; 29 February falls on 1 March in a common year.
    birthday = oracle_date(year + 18, month, day) or datetime.date(year + 18, 3, 1)
    return "underage" if TODAY < birthday else None


def oracle(body: dict[str, Any]) -> dict[str, str]:
    """Every field code the contract gives the body ({} when it is valid)."""
    codes = {"_unknown": "unknown_field"} if set(body) - set(KNOWN_FIELDS) else {}
    nik_date = None
    for name in KNOWN_FIELDS:
        if name not in body:
            codes[name] = "required"
            continue
        value = body[name]
        if name == "consent":
            if not isinstance(value, bool):
                codes[name] = "wrong_type"
            elif value is not True:
                codes[name] = "must_be_true"
            continue
        if not isinstance(value, str):
            codes[name] = "wrong_type"
            continue
        if name == "nik":
            code, nik_date = oracle_nik(value)
        elif name == "full_name":
            code = oracle_name(value)
        elif name == "email":
            code = oracle_email(value)
        elif name == "phone":
            code = oracle_phone(value)
        else:
            code = oracle_birth_date(value, nik_date)
        if code is not None:
            codes[name] = code
    return codes


# Values near the rules' edges, mixed with anything, so both sides of each rule are hit.
digits_text = st.text(ASCII_DIGITS, min_size=0, max_size=3)
nik_values = st.one_of(
    st.builds(lambda p, a, d, m, y, s: f"{p:02d}{a}{d:02d}{m:02d}{y:02d}{s}",
              st.sampled_from(sorted(ORACLE_PROVINCES)) | st.integers(0, 99),
              st.sampled_from(["0101", "0001", "0100", "3275"]),
              st.integers(0, 75), st.integers(0, 13), st.integers(0, 99),
              st.sampled_from(["0001", "0000", "9999"])),
    st.text(ASCII_DIGITS + "a\uff11", max_size=17),
)
name_values = st.text(
    st.characters(categories=("L", "M", "Zs", "P", "N")) | st.sampled_from(list(" .'-")),
    max_size=105,
)
email_values = st.one_of(
    st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9_+-]{1,5})?@[a-z0-9]{1,8}(-[a-z]{1,3})?\.[a-z]{2,3}",
                  fullmatch=True),
    st.from_regex(r"[A-Za-z0-9.!#'_+-]{0,12}@[A-Za-z0-9.-]{0,20}", fullmatch=True),
    st.builds(lambda n: "a" * n + "@example.com", st.integers(240, 250)),
    st.text(max_size=20),
)
phone_values = st.one_of(
    st.builds(lambda p, d, sep: sep.join(p + d), st.sampled_from(["08", "628", "+628", "8", "07"]),
              st.text(ASCII_DIGITS, min_size=7, max_size=13), st.sampled_from(["", " ", "-"])),
    st.text(ASCII_DIGITS + " -+\u0668", max_size=16),
)
date_values = st.one_of(
    st.dates(datetime.date(1920, 1, 1), datetime.date(2026, 12, 31)).map(str),
    st.from_regex(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,3}", fullmatch=True),
    st.text(max_size=12),
)
# Always valid under the contract: drawn most of the time, so whole bodies pass too.
valid_values = {
    "nik": st.builds(lambda p, d, m, y: f"{p}0101{d:02d}{m:02d}{y:02d}0001",
                     st.sampled_from(sorted(ORACLE_PROVINCES)),
                     st.integers(1, 28) | st.integers(41, 68), st.integers(1, 12),
                     st.integers(27, 99) | st.integers(0, 8)),
    "full_name": st.sampled_from(["Budi Santoso", "  Dewi  Lestari ", "O'Neil-Putri"]),
    "email": st.from_regex(r"[a-z0-9]{1,8}@[a-z0-9]{1,8}\.[a-z]{2,3}", fullmatch=True),
    "phone": st.builds(lambda p, d: p + "8" + d, st.sampled_from(["0", "62", "+62"]),
                       st.text(ASCII_DIGITS, min_size=8, max_size=11)),
    "birth_date": st.just("1990-01-01"),
    "consent": st.just(True),
}
field_values = {
    "nik": nik_values, "full_name": name_values, "email": email_values,
    "phone": phone_values, "birth_date": date_values,
    "consent": st.sampled_from([True, True, True, False, None, 1, "true"]),
}


@st.composite
def near_valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name, values in field_values.items():
        # 19 rather than 0: Hypothesis draws the smallest values more often.
        if draw(st.integers(0, 19)) == 19:
            continue  # left out: required
        pick = draw(st.integers(0, 19))
        body[name] = draw(json_values if pick == 19 else values if pick >= 11
                          else valid_values[name])
    if isinstance(body.get("nik"), str) and draw(st.integers(0, 3)) < 3:
        # Often give the birth date the NIK encodes, so whole bodies pass too.
        _, nik_date = oracle_nik(body["nik"])
        if nik_date is not None:
            day, month, yy = nik_date
            year = 2000 + yy if 2000 + yy <= TODAY.year else 1900 + yy
            body["birth_date"] = f"{year:04d}-{month:02d}-{day:02d}"
    if draw(st.integers(0, 19)) == 19:
        body[draw(st.text(max_size=8))] = draw(json_values)
    return body


@settings(max_examples=1500, deadline=None)
@given(near_valid_bodies())
def test_the_validator_accepts_exactly_what_the_contract_accepts(body: dict[str, Any]) -> None:
    expected = oracle(body)
    result = validate_registration(body, TODAY)
    if expected:
        assert result == expected
    else:
        assert isinstance(result, PersonalData), result


@settings(max_examples=300, deadline=None)
@given(json_values | st.dictionaries(field_names, json_values, max_size=8))
def test_the_validator_never_raises_on_any_json(body: Any) -> None:
    result = validate_registration(body, TODAY)
    assert isinstance(result, PersonalData | dict)
