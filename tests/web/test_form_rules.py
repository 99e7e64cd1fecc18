"""The form's browser validator agrees with the server's, case by case.

The table runs through intake/validation.py here and through form.js in
Chromium; each case is named, so a failure prints names and codes, never the
(made-up) personal data.
"""

from __future__ import annotations

import datetime
from typing import Any, Final

from intake.form_rules import FIELD_MESSAGES, form_rules
from intake.validation import FIELD_CODES, validate_registration
from queueing.envelope import PersonalData
from tests.intake.door_helpers import DoorUnderTest
from tests.web.browser import chromium_page

TODAY: Final = datetime.date(2026, 11, 22)
BASE: Final[dict[str, Any]] = {
    "nik": "3201014506990001", "full_name": "Siti Nurhaliza", "email": "siti@example.com",
    "phone": "0812-3456-7890", "birth_date": "1999-06-05", "consent": True,
}
_DROP: Final = object()
# (name, changes to BASE, today or None for TODAY). _DROP removes a field.
CASES: Final[list[tuple[str, dict[str, Any], datetime.date | None]]] = [
    ("valid", {}, None),
    ("valid man's NIK", {"nik": "3201010506990001"}, None),
    ("NIK empty", {"nik": ""}, None),
    ("NIK 15 digits", {"nik": "320101450699000"}, None),
    ("NIK with a letter", {"nik": "320101450699000A"}, None),
    ("NIK in Arabic-Indic digits", {"nik": "\u0663" * 16}, None),
    ("NIK province 10", {"nik": "1001014506990001"}, None),
    ("NIK province 20", {"nik": "2001014506990001"}, None),
    ("NIK regency 00", {"nik": "3200014506990001"}, None),
    ("NIK district 00", {"nik": "3201004506990001"}, None),
    ("NIK day 00", {"nik": "3201010006990001"}, None),
    ("NIK day 32", {"nik": "3201013206990001"}, None),
    ("NIK day 40", {"nik": "3201014006990001"}, None),
    ("NIK day 72", {"nik": "3201017206990001"}, None),
    ("NIK month 13", {"nik": "3201014513990001"}, None),
    ("NIK 29 Feb of a common year", {"nik": "3201012902010001", "birth_date": "2001-02-29"},
     None),
    ("NIK 29 Feb of a leap year", {"nik": "3201012902000001", "birth_date": "2000-02-29"}, None),
    ("NIK serial 0000", {"nik": "3201014506990000"}, None),
    ("NIK missing", {"nik": _DROP}, None),
    ("NIK a number", {"nik": 3201014506990001}, None),
    ("NIK this year's YY is this century", {"nik": "3201014506260001",
                                            "birth_date": "2026-06-05"}, None),
    ("NIK next year's YY is last century", {"nik": "3201014506270001",
                                            "birth_date": "1927-06-05"}, None),
    ("name empty", {"full_name": ""}, None),
    ("name spaces only", {"full_name": "   "}, None),
    ("name 100 letters", {"full_name": "A" * 100}, None),
    ("name 101 letters", {"full_name": "A" * 101}, None),
    ("name 100 after collapsing spaces", {"full_name": "A" * 50 + "   " + "B" * 49}, None),
    ("name with a digit", {"full_name": "Siti1"}, None),
    ("name of punctuation only", {"full_name": ".-'"}, None),
    ("name with accents", {"full_name": "José Ñúñez"}, None),
    ("name decomposed accents", {"full_name": "Jose\u0301"}, None),
    ("name apostrophe and hyphen", {"full_name": "O'Brien-Smith Jr."}, None),
    ("name in CJK", {"full_name": "名前"}, None),
    ("name with no-break spaces around", {"full_name": "\u00a0Siti\u00a0"}, None),
    ("name with U+001C around (Python strips it)", {"full_name": "\x1cSiti\x1c"}, None),
    ("name with U+FEFF around (Python keeps it)", {"full_name": "\ufeffSiti"}, None),
    ("name with a tab inside", {"full_name": "Siti\tNur"}, None),
    ("name with an emoji", {"full_name": "Siti \U0001f600"}, None),
    ("name a list", {"full_name": ["Siti"]}, None),
    ("email upper case", {"email": "SITI@Example.COM"}, None),
    ("email one label domain", {"email": "siti@localhost"}, None),
    ("email no at", {"email": "siti.example.com"}, None),
    ("email two ats", {"email": "a@b@example.com"}, None),
    ("email dot at the end of local", {"email": "siti.@example.com"}, None),
    ("email non-ASCII", {"email": "s\u00efti@example.com"}, None),
    ("email 255 characters", {"email": "a" * 250 + "@x.io"}, None),
    ("email 254 characters", {"email": "a" * 249 + "@x.io"}, None),
    ("email hyphen-led label", {"email": "siti@-example.com"}, None),
    ("email atext symbols", {"email": "a+b!#$%&'*/=?^_`{|}~-@example.co.id"}, None),
    ("phone +62", {"phone": "+6281234567890"}, None),
    ("phone 62 with spaces", {"phone": "62 812 3456 7890"}, None),
    ("phone 9 digits from the 8", {"phone": "0812345678"}, None),
    ("phone 8 digits from the 8", {"phone": "081234567"}, None),
    ("phone 13 digits from the 8", {"phone": "08123456789012"}, None),
    ("phone not a mobile", {"phone": "0712345678"}, None),
    ("phone with dots", {"phone": "0812.3456.7890"}, None),
    ("phone in full-width digits", {"phone": "\uff10\uff18\uff11\uff12\uff13\uff14\uff15\uff16"
                                              "\uff17\uff18\uff19"}, None),
    ("birth date unpadded", {"birth_date": "1999-6-5"}, None),
    ("birth date 30 February", {"birth_date": "1999-02-30"}, None),
    ("birth date year 0", {"birth_date": "0000-06-05"}, None),
    ("birth date other century, same YY", {"birth_date": "1899-06-05"}, None),
    ("birth date in the future, same YY", {"birth_date": "2099-06-05"}, None),
    ("birth date one day off the NIK", {"birth_date": "1999-06-06"}, None),
    ("birth date one month off the NIK", {"birth_date": "1999-07-05"}, None),
    ("birth date one year off the NIK", {"birth_date": "1998-06-05"}, None),
    ("birth date underage with a bad NIK", {"nik": "1", "birth_date": "2010-01-01"}, None),
    ("18 today", {"nik": "3201012211080001", "birth_date": "2008-11-22"}, None),
    ("18 tomorrow", {"nik": "3201012311080001", "birth_date": "2008-11-23"}, None),
    ("born 29 Feb, 28 Feb of the 18th year",
     {"nik": "3201012902080001", "birth_date": "2008-02-29"}, datetime.date(2026, 2, 28)),
    ("born 29 Feb, 1 March of the 18th year",
     {"nik": "3201012902080001", "birth_date": "2008-02-29"}, datetime.date(2026, 3, 1)),
    ("email, phone and birth date not strings",
     {"email": None, "phone": 812345678, "birth_date": {"y": 1999}}, None),
    ("consent false", {"consent": False}, None),
    ("consent a string", {"consent": "true"}, None),
    ("consent missing", {"consent": _DROP}, None),
    ("an unknown field", {"extra": 1}, None),
    ("everything missing", {name: _DROP for name in BASE}, None),
]
NOT_OBJECTS: Final[list[tuple[str, Any]]] = [
    ("a list", []), ("a string", "x"), ("null", None), ("a number", 1)]


def case_body(changes: dict[str, Any]) -> dict[str, Any]:
    body = {**BASE, **changes}
    return {name: value for name, value in body.items() if value is not _DROP}


def server_codes(body: Any, today: datetime.date) -> dict[str, str]:
    result = validate_registration(body, today)
    return {} if isinstance(result, PersonalData) else result


def test_every_field_code_has_an_indonesian_message() -> None:
    assert {field: set(codes) for field, codes in FIELD_MESSAGES.items()} == {
        field: set(codes) for field, codes in FIELD_CODES.items()}
    assert all(text.strip() for codes in FIELD_MESSAGES.values() for text in codes.values())


def test_the_table_covers_every_field_code() -> None:
    # Each code the server can give a field appears in some case (so the comparison
    # below checks the browser on every rule, not only on the easy ones).
    seen: dict[str, set[str]] = {}
    for _, changes, today in CASES:
        for field, code in server_codes(case_body(changes), today or TODAY).items():
            seen.setdefault(field, set()).add(code)
    seen["body"] = {code for _, body in NOT_OBJECTS
                    for code in server_codes(body, TODAY).values()}
    assert seen == {field: set(codes) for field, codes in FIELD_CODES.items()}


def test_the_rules_come_from_the_validator() -> None:
    rules = form_rules()
    assert rules["fields"] == list(BASE)
    assert "11" in rules["nik"]["provinces"] and "20" not in rules["nik"]["provinces"]
    assert "\x1c" in rules["full_name"]["strip"] and "\ufeff" not in rules["full_name"]["strip"]


async def test_the_browser_gives_the_servers_field_codes(door_under_test: DoorUnderTest) -> None:
    table: list[tuple[str, Any, str]] = [(name, case_body(changes), (today or TODAY).isoformat())
             for name, changes, today in CASES]
    table += [(name, body, TODAY.isoformat()) for name, body in NOT_OBJECTS]
    async with chromium_page() as page:
        await page.goto(str(door_under_test.public.make_url("/")))
        browser = await page.evaluate(
            "table => table.map(([, body, today]) => window.gelombangForm.validate(body, today))",
            table)
    disagreements = [
        (name, server_codes(body, datetime.date.fromisoformat(today)), codes)
        for (name, body, today), codes in zip(table, browser, strict=True)
        if server_codes(body, datetime.date.fromisoformat(today)) != codes
    ]
    assert disagreements == []
