"""The structural rules of the NIK (Nomor Induk Kependudukan), Indonesia's 16-digit ID number.

Layout: PP RR DD ddmmyy SSSS — province, regency/city, district, birth date
(day + 40 for women), serial. Only the structure is checked here; whether
the number was ever issued is the workers' NIK verification.
"""

from __future__ import annotations

import datetime
from typing import Final

INVALID_FORMAT: Final = "invalid_format"
INVALID_REGION: Final = "invalid_region"
INVALID_DATE: Final = "invalid_date"
INVALID_SERIAL: Final = "invalid_serial"
# Listed in the order the rules are checked: the first failing one is reported.
NIK_CODES: Final = (INVALID_FORMAT, INVALID_REGION, INVALID_DATE, INVALID_SERIAL)

PROVINCE_CODES: Final[frozenset[str]] = frozenset(
    f"{code:02d}"
    for code in (
        *range(11, 20), 21, *range(31, 37), *range(51, 54), *range(61, 66),
        *range(71, 77), 81, 82, *range(91, 97),
    )
)
NIK_LENGTH: Final = 16
# Women's NIKs carry the birth day plus 40 (41-71 for days 1-31).
WOMAN_DAY_OFFSET: Final = 40
_NO_AREA: Final = "00"
_NO_SERIAL: Final = "0000"


def resolve_century(yy: int, today: datetime.date) -> int:
    """The four-digit year of a two-digit NIK year: the latest one not after today's year."""
    # YY <= today's YY is this century (2000-2026 in 2026), else the previous
    # one (1927-1999): the NIK carries no century, and nobody registers before
    # being born. The whole date may still fall later this year; the age rule
    # rejects such a registrant, so the NIK itself is not called invalid.
    century = today.year - today.year % 100
    return century + yy if yy <= today.year % 100 else century - 100 + yy


def nik_birth_date(nik: str, today: datetime.date) -> datetime.date | str:
    """The birth date a NIK encodes (century resolved), or the code of the first rule it breaks."""
    # isdigit() alone would accept other scripts' digits (e.g. Arabic-Indic).
    if len(nik) != NIK_LENGTH or not nik.isascii() or not nik.isdigit():
        return INVALID_FORMAT
    if nik[:2] not in PROVINCE_CODES or nik[2:4] == _NO_AREA or nik[4:6] == _NO_AREA:
        return INVALID_REGION
    day = int(nik[6:8])
    if day > WOMAN_DAY_OFFSET:
        day -= WOMAN_DAY_OFFSET
    try:
        # Day 0, 32-40 and 72+ fail here too; so does 29 Feb of a common year,
        # which is why the century is resolved before the check.
        birth = datetime.date(resolve_century(int(nik[10:12]), today), int(nik[8:10]), day)
    except ValueError:
        return INVALID_DATE
    if nik[12:] == _NO_SERIAL:
        return INVALID_SERIAL
    return birth
