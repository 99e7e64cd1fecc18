"""The NIK's structural rules, in the order the contract checks them."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intake.nik import (
    INVALID_DATE,
    INVALID_FORMAT,
    INVALID_REGION,
    INVALID_SERIAL,
    PROVINCE_CODES,
    nik_birth_date,
    resolve_century,
)
from tests.support import FULL_WIDTH

TODAY = datetime.date(2026, 11, 22)


@pytest.mark.parametrize(
    ("nik", "expected"),
    [
        ("3201010101900001", datetime.date(1990, 1, 1)),
        ("3201014101900001", datetime.date(1990, 1, 1)),  # a woman: day + 40
        ("3201017112990001", datetime.date(1999, 12, 31)),  # the last woman's day
        ("1101010101269999", datetime.date(2026, 1, 1)),  # YY 26 in 2026 is this century
        ("9601012712270001", datetime.date(1927, 12, 27)),  # YY 27 in 2026 is the last one
        ("3201012902000001", datetime.date(2000, 2, 29)),  # 2000 was a leap year
        ("3201016902040001", datetime.date(2004, 2, 29)),
    ],
)
def test_valid_niks_give_their_birth_date(nik: str, expected: datetime.date) -> None:
    assert nik_birth_date(nik, TODAY) == expected


@pytest.mark.parametrize(
    ("nik", "code"),
    [
        ("", INVALID_FORMAT),
        ("320101010190000", INVALID_FORMAT),  # 15 digits
        ("32010101019000011", INVALID_FORMAT),  # 17 digits
        ("3201010101900O01", INVALID_FORMAT),  # a letter O
        (" 201010101900001", INVALID_FORMAT),
        ("3201010101900001".translate(FULL_WIDTH), INVALID_FORMAT),  # full-width digits
        ("٣٢٠١٠١٠١٠١٩٠٠٠٠١", INVALID_FORMAT),  # Arabic-Indic digits
        ("2001010101900001", INVALID_REGION),  # province 20 does not exist
        ("1001010101900001", INVALID_REGION),
        ("9701010101900001", INVALID_REGION),
        ("3200010101900001", INVALID_REGION),  # regency 00
        ("3201000101900001", INVALID_REGION),  # district 00
        ("3201010001900001", INVALID_DATE),  # day 0
        ("3201013201900001", INVALID_DATE),  # day 32
        ("3201014001900001", INVALID_DATE),  # day 40 = woman's day 0
        ("3201017201900001", INVALID_DATE),  # day 72 = woman's day 32
        ("3201010113900001", INVALID_DATE),  # month 13
        ("3201010100900001", INVALID_DATE),  # month 0
        ("3201012902010001", INVALID_DATE),  # 29 Feb 2001
        ("3201013104900001", INVALID_DATE),  # 31 April
        ("3201010101900000", INVALID_SERIAL),
        ("2001013201900000", INVALID_REGION),  # region before date before serial
        ("3201013201900000", INVALID_DATE),  # date before serial
    ],
)
def test_invalid_niks_report_the_first_rule_they_break(nik: str, code: str) -> None:
    assert nik_birth_date(nik, TODAY) == code


def test_province_table_is_the_contracts() -> None:
    expected = {
        *range(11, 20), 21, *range(31, 37), *range(51, 54), *range(61, 66), *range(71, 77),
        81, 82, *range(91, 97),
    }
    assert {int(code) for code in PROVINCE_CODES} == expected
    assert all(len(code) == 2 for code in PROVINCE_CODES)


@given(st.integers(0, 99), st.dates(datetime.date(1950, 1, 1), datetime.date(2099, 12, 31)))
def test_century_is_the_latest_not_after_today(yy: int, today: datetime.date) -> None:
    year = resolve_century(yy, today)
    assert year % 100 == yy
    assert today.year - 100 < year <= today.year


@given(st.text(max_size=20))
def test_anything_but_sixteen_ascii_digits_is_invalid_format(text: str) -> None:
    if len(text) == 16 and text.isascii() and text.isdigit():
        return
    assert nik_birth_date(text, TODAY) == INVALID_FORMAT


@given(
    st.sampled_from(sorted(PROVINCE_CODES)),
    st.integers(1, 99),
    st.integers(1, 99),
    st.dates(datetime.date(1927, 1, 1), TODAY),
    st.booleans(),
    st.integers(1, 9999),
)
def test_every_structurally_valid_nik_round_trips_its_date(
    province: str, regency: int, district: int, born: datetime.date, woman: bool, serial: int
) -> None:
    day = born.day + (40 if woman else 0)
    nik = (f"{province}{regency:02d}{district:02d}{day:02d}{born.month:02d}"
           f"{born.year % 100:02d}{serial:04d}")
    assert nik_birth_date(nik, TODAY) == born
