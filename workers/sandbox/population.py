"""A deterministic synthetic population behind the NIK simulator.

Whether a NIK "exists", and the name and birth date the ministry holds for it,
are pure functions of a seed and the NIK: every simulator process, test and
load generator given the same seed sees the same population, with nothing
stored.
"""

from __future__ import annotations

import datetime
import hashlib
import random
import unicodedata
from dataclasses import dataclass
from typing import Final

NIK_LENGTH: Final = 16
# Women's NIKs carry the birth day plus 40.
WOMAN_DAY_OFFSET: Final = 40
# A two-digit year is this century's only if that makes the holder at least this old.
MIN_AGE_FOR_CENTURY: Final = 17
# Share of existing records whose birth date is a day after the NIK's: the
# ministry's records do not always agree with what people type.
DRIFT_SHARE: Final = 0.02
# find_nik gives up after this many draws (e.g. exists=True with existing_share 0).
MAX_DRAWS: Final = 1_000_000

PROVINCE_CODES: Final = (
    *range(11, 20), 21, *range(31, 37), *range(51, 54), *range(61, 66),
    *range(71, 77), 81, 82, *range(91, 97),
)

# Given names, and names that come second or last. Some carry an apostrophe,
# a hyphen, a dot or a letter outside ASCII, as real ones do; each is NFC.
GIVEN_NAMES: Final = (
    "Siti", "Nur'aini", "Dewi", "Putri", "Ayu", "Sri", "Rina", "Wulan", "Indah",
    "Fitri", "Ahmad", "Muhammad", "Moh.", "M.", "Budi", "Agus", "Eko", "Dwi", "Joko",
    "Rizky", "Fajar", "Yusuf", "Hendra", "Bambang", "I Gede", "Ni Luh", "Made",
    "Ketut", "Wayan", "Kadek", "Teuku", "Cut", "Andi", "Yohanes", "Maria", "André",
    "Salmā", "Nur", "Abdul", "Ratna", "Yuliana", "Stefanus", "Lukas", "Ursula",
)
SECOND_NAMES: Final = (
    "Santoso", "Wijaya", "Saputra", "Lestari", "Hidayat", "Nasution", "Siregar",
    "Harahap", "Simanjuntak", "Hutapea", "Pratama", "Kurniawan", "Setiawan",
    "Susanti", "Rahmawati", "Nugroho", "Wibowo", "Gunawan", "Halim", "Sembiring",
    "Ginting", "Tarigan", "Lubis", "Sitompul", "Abdul-Rahman", "Al-Fatih", "Ma'ruf",
    "Mu'min", "Syah", "Hasibuan", "Panjaitan", "Sinaga", "Manurung", "Daulay",
    "Batubara", "Situmorang", "Wahyudi", "Fauzi", "Ramadhan", "Anggraini",
    "Permata Sari", "Hakim", "Sulistyowati", "Kusumawardhani", "Renée",
)


@dataclass(frozen=True, slots=True)
class CivilRecord:
    """What the ministry holds for one NIK."""

    full_name: str
    birth_date: datetime.date

    def __repr__(self) -> str:
        # Personal data stays out of logs, reprs and tracebacks.
        return "CivilRecord(<redacted>)"


def _digest(seed: int, nik: str) -> bytes:
    return hashlib.sha256(f"{seed}:{nik}".encode()).digest()


def _uniform(chunk: bytes) -> float:
    """A draw in [0, 1) from 8 bytes of a hash."""
    return int.from_bytes(chunk, "big") / 2**64


def nik_birth_date(nik: str, today: datetime.date | None = None) -> datetime.date | None:
    """The birth date a NIK's DDMMYY encodes, or None when it is malformed or not a date."""
    if len(nik) != NIK_LENGTH or not nik.isascii() or not nik.isdigit():
        return None
    day, month, yy = int(nik[6:8]), int(nik[8:10]), int(nik[10:12])
    if day > WOMAN_DAY_OFFSET:
        day -= WOMAN_DAY_OFFSET
    this_year = (today or datetime.date.today()).year
    year = 2000 + yy if 2000 + yy <= this_year - MIN_AGE_FOR_CENTURY else 1900 + yy
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def _name(digest: bytes) -> str:
    given = GIVEN_NAMES[int.from_bytes(digest[16:20], "big") % len(GIVEN_NAMES)]
    second = SECOND_NAMES[int.from_bytes(digest[20:24], "big") % len(SECOND_NAMES)]
    shape = digest[28] % 20
    if shape < 3:  # about 15 %: one name only, as many Javanese have
        return given
    if shape < 14:
        return f"{given} {second}"
    middle = GIVEN_NAMES[int.from_bytes(digest[24:28], "big") % len(GIVEN_NAMES)]
    return f"{given} {middle} {second}"


def record_for(nik: str, seed: int, existing_share: float) -> CivilRecord | None:
    """The ministry's record for a NIK, or None when it is malformed or was never issued."""
    born = nik_birth_date(nik)
    if born is None:
        return None
    digest = _digest(seed, nik)
    if _uniform(digest[0:8]) >= existing_share:
        return None
    if _uniform(digest[8:16]) < DRIFT_SHARE:
        born += datetime.timedelta(days=1)
    return CivilRecord(_name(digest), born)


def _normal_form(name: str) -> str:
    folded = unicodedata.normalize("NFC", name).casefold()
    return unicodedata.normalize("NFC", " ".join(folded.split()))


def names_match(a: str, b: str) -> bool:
    """Whether two names are the same up to Unicode form, case and spacing."""
    return _normal_form(a) == _normal_form(b)


def random_nik(rng: random.Random, today: datetime.date | None = None) -> str:
    """A structurally valid NIK of an adult aged 20-50 (half of them women)."""
    this_year = (today or datetime.date.today()).year
    year = this_year - rng.randint(20, 50)
    born = datetime.date(year, 1, 1) + datetime.timedelta(
        days=rng.randrange((datetime.date(year + 1, 1, 1) - datetime.date(year, 1, 1)).days)
    )
    day = born.day + (WOMAN_DAY_OFFSET if rng.random() < 0.5 else 0)
    return (
        f"{rng.choice(PROVINCE_CODES):02d}{rng.randint(1, 99):02d}{rng.randint(1, 99):02d}"
        f"{day:02d}{born.month:02d}{born.year % 100:02d}{rng.randint(1, 9999):04d}"
    )


def is_drifted(nik: str, seed: int) -> bool:
    """Whether an existing NIK's record disagrees with its birth date (by a day)."""
    return _uniform(_digest(seed, nik)[8:16]) < DRIFT_SHARE


def find_nik(
    seed: int,
    existing_share: float,
    *,
    exists: bool = True,
    drifted: bool = False,
    rng: random.Random,
) -> str:
    """A random valid NIK that exists (or not) and is drifted (or not), for tests and load."""
    if drifted and not exists:
        raise ValueError("only an existing NIK can have a drifted record")
    if (exists and existing_share <= 0) or (not exists and existing_share >= 1):
        raise ValueError("no such NIK in this population: check existing_share")
    for _ in range(MAX_DRAWS):
        nik = random_nik(rng)
        if (record_for(nik, seed, existing_share) is not None) != exists:
            continue
        if exists and is_drifted(nik, seed) != drifted:
            continue
        return nik
    raise ValueError("no such NIK found: check existing_share")
