"""Synthetic registrants that pass the door's rules (shared by tests, benchmarks, Locust).

Every value is made up: NIKs are built from the public structure (province,
regency, district, DDMMYY with +40 for women, serial), emails use reserved
example domains, so nothing here is a real person's data.
"""

from __future__ import annotations

import datetime
import random
import secrets
from dataclasses import dataclass
from typing import Any

from workers.sandbox.population import find_nik, nik_birth_date, record_for

PROVINCES = (
    *range(11, 20), 21, *range(31, 37), *range(51, 54), *range(61, 66), *range(71, 77), 81, 82,
    *range(91, 97),
)
# Given names, and family or second names. Some carry an apostrophe, a hyphen,
# a dot or a letter outside ASCII, as real ones do; each is NFC.
GIVEN_NAMES = ("Siti", "Budi", "Dewi", "Agus", "Ni Luh", "I Gede", "Nur'aini", "Ahmad",
               "Made", "Rini", "Yohanes", "Fransiska", "Muhammad", "Séno", "Putu", "Moh.",
               "M.", "Sri", "Ayu", "Eko", "Dwi", "Rizky", "Fajar", "Wulan", "Indah", "Teuku",
               "Cut", "Ketut", "Nyoman", "Andi", "Salmā", "André", "Zulfa", "Ma'ruf", "Nurul",
               "Ursula", "Stefanus", "Yuliana", "Bambang", "Hendra", "Kadek", "Wayan")
FAMILY_NAMES = ("Aminah", "Santoso", "Lestari", "Wibowo", "Putri", "Saragih", "Nainggolan",
                "Hasibuan", "Sitompul", "Pratama", "Kusuma", "Hidayat", "St. Maria", "Al-Hakim",
                "Abdul-Rahman", "Mu'min", "Nasution", "Siregar", "Harahap", "Simanjuntak",
                "Setiawan", "Rahmawati", "Nugroho", "Sembiring", "Ginting", "Permata Sari",
                "Sulistyowati", "Kusumawardhani", "Renée", "Ramadhan", "Anggraini", "Halim",
                "Syah", "Al-Fatih", "Ba'asyir", "Situmorang", "Tan", "Gunawan", "Hutapea")
# Given names that can stand alone, as many Javanese names do (not initials such as "M.").
MONONYMS = tuple(name for name in GIVEN_NAMES if "." not in name)
EMAIL_DOMAINS = ("example.com", "example.co.id", "example.id", "mail.example.org")


@dataclass(frozen=True, slots=True)
class Registrant:
    """One made-up applicant, as the web form would submit it."""

    nik: str
    full_name: str
    email: str
    phone: str
    birth_date: datetime.date

    def __repr__(self) -> str:
        # Made up, but shaped like personal data: kept out of test output all the same.
        return "Registrant(<personal data redacted>)"

    def body(self) -> dict[str, Any]:
        """The JSON body of POST /v1/registrations."""
        return {
            "nik": self.nik,
            "full_name": self.full_name,
            "email": self.email,
            "phone": self.phone,
            "birth_date": self.birth_date.isoformat(),
            "consent": True,
        }


class RegistrantFactory:
    """Makes valid registrants; emails and phones are unique across runs."""

    def __init__(self, seed: int | None = None, today: datetime.date | None = None) -> None:
        self._rng = random.Random(seed)
        self._today = today or datetime.date.today()
        # A per-factory random run tag keeps emails unique across runs.
        self._run = secrets.token_hex(4) if seed is None else f"s{seed}"
        self._count = 0

    def birth_date(self) -> datetime.date:
        """A birth date of someone aged 18 to 60 today."""
        oldest = years_before(self._today, 60)
        youngest = years_before(self._today, 18) - datetime.timedelta(days=1)
        return oldest + datetime.timedelta(days=self._rng.randint(0, (youngest - oldest).days))

    def nik(self, birth: datetime.date, woman: bool) -> str:
        """A structurally valid NIK for the birth date."""
        rng = self._rng
        day = birth.day + (40 if woman else 0)
        return (
            f"{rng.choice(PROVINCES):02d}{rng.randint(1, 79):02d}{rng.randint(1, 49):02d}"
            f"{day:02d}{birth.month:02d}{birth.year % 100:02d}{rng.randint(1, 9999):04d}"
        )

    def full_name(self) -> str:
        """An Indonesian name: one name (10 %), given and family (70 %), or three parts."""
        rng = self._rng
        shape = rng.random()
        if shape < 0.1:
            return rng.choice(MONONYMS)
        if shape < 0.8:
            return f"{rng.choice(GIVEN_NAMES)} {rng.choice(FAMILY_NAMES)}"
        return f"{rng.choice(GIVEN_NAMES)} {rng.choice(GIVEN_NAMES)} {rng.choice(FAMILY_NAMES)}"

    def phone(self) -> str:
        """A mobile number in one of the three accepted forms."""
        rest = f"8{self._rng.randint(1, 9)}{self._rng.randint(10**7, 10**10 - 1)}"
        return self._rng.choice(("0", "62", "+62")) + rest

    def same_nik_as(self, person: Registrant) -> Registrant:
        """A new registrant who reuses `person`'s NIK (and so its birth date)."""
        fresh = self.make()
        return Registrant(person.nik, fresh.full_name, fresh.email, fresh.phone,
                          person.birth_date)

    def citizen(self, seed: int, existing_share: float, *, exists: bool = True,
                drifted: bool = False) -> Registrant:
        """A registrant as the NIK simulator's population (`nik_sim.population_seed`,
        `nik_sim.existing_share`) knows them: their NIK exists (or not), with the
        recorded name and the birth date the NIK spells (which a `drifted` record
        contradicts by a day)."""
        nik = find_nik(seed, existing_share, exists=exists, drifted=drifted, rng=self._rng)
        record = record_for(nik, seed, existing_share)
        born = nik_birth_date(nik, self._today)
        assert born is not None  # find_nik returns NIKs with a real date
        name = record.full_name if record is not None else self.full_name()
        return Registrant(nik, name, self.email(), self.phone(), born)

    def email(self) -> str:
        """An address no earlier one of this factory (or, unseeded, of any run) has."""
        self._count += 1
        return f"applicant.{self._run}.{self._count}@{self._rng.choice(EMAIL_DOMAINS)}"

    def make(self) -> Registrant:
        """A new valid registrant."""
        birth = self.birth_date()
        name = self.full_name()
        email = self.email()
        return Registrant(self.nik(birth, self._rng.random() < 0.5), name, email, self.phone(),
                          birth)


def years_before(day: datetime.date, years: int) -> datetime.date:
    """The same day `years` earlier; 28 February when that year has no 29th."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)
