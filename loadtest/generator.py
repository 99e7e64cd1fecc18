"""The surge workload: what the web form sends during a registration wave.

One `SurgeGenerator` feeds Locust users, tests and benchmarks alike. Most
submissions are valid; a configured share reuse an earlier registrant's NIK
or email (accepted at the door, stored as `duplicate` by the drain); another
share break exactly one rule of docs/api.md, each with the status and `fields`
the door must answer; and some valid ones are sent twice with the same
Idempotency-Key, as a double-clicked submit button does.

Every value is made up (see `loadtest.registrants`). Not thread-safe: give
each Locust user or process its own generator (and its own seed, or none).
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from loadtest.registrants import Registrant, RegistrantFactory, years_before

JAKARTA: Final = ZoneInfo("Asia/Jakarta")
VALID: Final = "valid"
DUPLICATE_NIK: Final = "duplicate_nik"
DUPLICATE_EMAIL: Final = "duplicate_email"
MALFORMED_JSON: Final = "malformed_json"
# Duplicates pick their original among this many latest valid registrants.
RECENT_VALID: Final = 10_000
# Mobile numbers from the leading 8: "8", an operator digit 1-9, then this many digits.
PHONE_TAIL_DIGITS: Final = (7, 8, 9, 10)
# A prime, so coprime to every phone space 9 * 10**n: n-th number = offset + n * step.
_PHONE_STEP: Final = 982_451_653
# Which tail length each number gets: mostly 9 digits (0812-3456-7890).
_PHONE_SHAPES: Final = (0, 1, 1, 2, 2, 2, 2, 2, 3, 3)
# The extra key of the unknown_field kind: a field of an older form.
UNKNOWN_KEY: Final = "referral_code"
# Where the door reports it: every unknown key under this one, its name never quoted
# back (intake/validation.py's UNKNOWN; the load generator imports nothing of the door).
UNKNOWN_REPORTED_AS: Final = "_unknown"


@dataclass(frozen=True, slots=True)
class Submission:
    """One POST /v1/registrations as the web form sends it, and what the door must answer."""

    kind: str
    body: bytes
    idempotency_key: str
    double_submit: bool
    expected_status: int
    expected_fields: dict[str, str] | None

    def __repr__(self) -> str:
        # The body holds (made-up) personal data: only the kind is shown.
        return f"Submission(kind={self.kind!r})"


@dataclass(frozen=True)
class Mix:
    """The shares of each kind of submission, out of all of them."""

    duplicate_share: float = 0.02
    invalid_share: float = 0.02
    double_submit_share: float = 0.01
    citizen: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        shares = (self.duplicate_share, self.invalid_share, self.double_submit_share)
        if not all(0.0 <= share <= 1.0 for share in shares):
            raise ValueError("every share must be between 0 and 1")
        # Double submits are valid ones: they come out of what the others leave.
        if self.double_submit_share > self.valid_share + 1e-9:
            raise ValueError("duplicate, invalid and double-submit shares add up to over 1")

    @property
    def valid_share(self) -> float:
        """The share of valid submissions (double-submitted ones among them)."""
        return 1.0 - self.duplicate_share - self.invalid_share


def jakarta_today() -> datetime.date:
    """Today's date in Asia/Jakarta, the date the door's age rule uses."""
    return datetime.datetime.now(JAKARTA).date()


class SurgeGenerator:
    """Endless submissions in the proportions of a `Mix`; deterministic given a seed."""

    # Every invalid kind, "invalid:<field>:<code>" or "malformed_json" (set from _BUILDERS).
    INVALID_KINDS: tuple[str, ...] = ()

    def __init__(self, mix: Mix = Mix(), seed: int | None = None,
                 today: datetime.date | None = None) -> None:
        self._mix = mix
        self._today = today or jakarta_today()
        self._factory = RegistrantFactory(seed, self._today)
        # A stream of its own: the factory's, seeded alike, would be correlated with it.
        self._rng = random.Random(None if seed is None else f"surge:{seed}")
        rng = self._rng
        self._key_prefix = f"{rng.getrandbits(48):012x}-"
        self._count = 0
        self._phone_offsets = [rng.randrange(9 * 10**digits) for digits in PHONE_TAIL_DIGITS]
        self._phone_counts = [0] * len(PHONE_TAIL_DIGITS)
        self._recent: list[Registrant] = []
        self._invalid_cut = mix.invalid_share
        self._duplicate_cut = mix.invalid_share + mix.duplicate_share
        valid = mix.valid_share
        self._double_chance = mix.double_submit_share / valid if valid > 0 else 0.0
        self._invalid = tuple(_BUILDERS.items())

    def next(self) -> Submission:
        """The next submission."""
        self._count += 1
        key = f"{self._key_prefix}{self._count:x}"
        draw = self._rng.random()
        if draw < self._invalid_cut:
            return self._invalid_submission(key)
        if draw < self._duplicate_cut and self._recent:
            return self._duplicate(key)
        person = self._valid_person()
        if len(self._recent) < RECENT_VALID:
            self._recent.append(person)
        else:
            self._recent[self._count % RECENT_VALID] = person
        double = self._rng.random() < self._double_chance
        return Submission(VALID, orjson.dumps(person.body()), key, double, 202, None)

    def _valid_person(self) -> Registrant:
        citizen = self._mix.citizen
        if citizen is None:
            return self._person()
        return replace(self._factory.citizen(*citizen), phone=self.phone())

    def _person(self) -> Registrant:
        # The factory's phones may repeat; this generator's never do.
        return replace(self._factory.make(), phone=self.phone())

    def _duplicate(self, key: str) -> Submission:
        rng = self._rng
        original = rng.choice(self._recent)
        fresh = self._person()
        if rng.random() < 0.5:
            person = Registrant(original.nik, fresh.full_name, fresh.email, fresh.phone,
                                original.birth_date)
            kind = DUPLICATE_NIK
        else:
            # People retype their address: the door compares it lower-cased.
            email = original.email
            retyped = rng.random()
            if retyped < 0.25:
                email = email.upper()
            elif retyped < 0.5:
                email = email.capitalize()
            person = Registrant(fresh.nik, fresh.full_name, email, fresh.phone,
                                fresh.birth_date)
            kind = DUPLICATE_EMAIL
        return Submission(kind, orjson.dumps(person.body()), key, False, 202, None)

    def _invalid_submission(self, key: str) -> Submission:
        kind, build = self._invalid[self._rng.randrange(len(self._invalid))]
        person = self._person()
        payload = build(self, person.body(), person)
        if kind == MALFORMED_JSON:
            return Submission(kind, payload, key, False, 400, None)
        _, field, code = kind.split(":")
        if field == UNKNOWN_KEY:
            field = UNKNOWN_REPORTED_AS
        return Submission(kind, orjson.dumps(payload), key, False, 422, {field: code})

    def phone(self) -> str:
        """A mobile number no earlier one of this generator has, in any accepted form."""
        rng = self._rng
        which = rng.choice(_PHONE_SHAPES)
        digits = PHONE_TAIL_DIGITS[which]
        number = self._phone_offsets[which] + self._phone_counts[which] * _PHONE_STEP
        self._phone_counts[which] += 1
        operator, tail = divmod(number % (9 * 10**digits), 10**digits)
        core = f"8{operator + 1}{tail:0{digits}d}"
        prefix = rng.choice(("0", "62", "+62"))
        style = rng.random()
        if style < 0.7:
            return prefix + core
        # Grouped as people write them: 0812-3456-7890, +62 812 3456 7890.
        sep = "-" if style < 0.85 else " "
        groups = [core[:3], *(core[i:i + 4] for i in range(3, len(core), 4))]
        lead = prefix + " " if prefix == "+62" and sep == " " else prefix
        return lead + sep.join(groups)

    def underage(self) -> tuple[str, datetime.date]:
        """A NIK and matching birth date of someone aged 10-17, at least 30 days from 18."""
        today = self._today
        youngest = years_before(today, 10)
        oldest = years_before(today, 18) + datetime.timedelta(days=30)
        born = oldest + datetime.timedelta(days=self._rng.randint(0, (youngest - oldest).days))
        return self._factory.nik(born, self._rng.random() < 0.5), born



# Builds a bad body from a valid body and its registrant: the payload to encode,
# or bytes to send as they are.
_Builder = Callable[[SurgeGenerator, dict[str, Any], Registrant], Any]
_BadValue = Callable[[random.Random, Registrant], Any]
_MISSING: Final = object()
_FIELDS: Final = ("nik", "full_name", "email", "phone", "birth_date", "consent")


def _field(name: str, bad: _BadValue) -> _Builder:
    """A builder that sets one field of a valid body to `bad`'s value (_MISSING: removes it)."""

    def build(gen: SurgeGenerator, body: dict[str, Any], person: Registrant) -> Any:
        value = bad(gen._rng, person)
        if value is _MISSING:
            del body[name]
        else:
            body[name] = value
        return body

    return build


def _bad_nik_format(rng: random.Random, p: Registrant) -> str:
    spaced = " ".join(p.nik[i:i + 4] for i in range(0, 16, 4))
    return rng.choice((p.nik[:-1], p.nik + "7", p.nik[:5] + "O" + p.nik[6:], spaced))


def _bad_nik_region(rng: random.Random, p: Registrant) -> str:
    province = rng.choice(("00", "10", "20", "22", "37", "50", "66", "80", "97", "99"))
    return rng.choice((province + p.nik[2:], p.nik[:2] + "00" + p.nik[4:],
                       p.nik[:4] + "00" + p.nik[6:]))


def _bad_nik_date(rng: random.Random, p: Registrant) -> str:
    # Days 32-40 and 72+ are no date even for women (day + 40); months 00, 13+.
    if rng.random() < 0.5:
        return p.nik[:6] + rng.choice(("00", "32", "40", "72", "99")) + p.nik[8:]
    return p.nik[:8] + rng.choice(("00", "13", "20")) + p.nik[10:]


def _long_name(rng: random.Random, p: Registrant) -> str:
    name = p.full_name
    return " ".join([name] * (101 // (len(name) + 1) + 1 + rng.randrange(3)))


def _bad_name(rng: random.Random, p: Registrant) -> str:
    name = p.full_name
    return rng.choice((name + " 2", name + ", S.H.", name + " (Ucok)", name + " \U0001f600",
                       "@" + name, name.replace(" ", "_") + "_", "..."))


def _bad_email(rng: random.Random, p: Registrant) -> str:
    local, _, domain = p.email.partition("@")
    return rng.choice((
        f"{local}{domain}", f"{local}@{domain.split('.')[0]}", f"{local} @{domain}",
        f"{local}.@{domain}", f"{local}@{domain}.", f"{local},x@{domain}", f"é{local}@{domain}",
    ))


def _long_email(rng: random.Random, p: Registrant) -> str:
    return "a" * (255 - len(p.email) + rng.randrange(30)) + "." + p.email


def _bad_phone(rng: random.Random, p: Registrant) -> str:
    return rng.choice(("0812345", "+65 8123 4567", "021-555-0123", p.phone + "12345",
                       "(0812) 3456 7890", "0812.3456.7890"))


def _bad_birth_date(rng: random.Random, p: Registrant) -> str:
    born = p.birth_date
    return rng.choice((f"{born:%d/%m/%Y}", f"{born:%d-%m-%Y}", f"{born.year:04d}-02-30",
                       f"{born.year:04d}-13-{born.day:02d}", "", f"{born.isoformat()}T00:00:00"))


def _mismatched_birth_date(rng: random.Random, p: Registrant) -> str:
    # Earlier, so still an adult: only the mismatch is reported.
    return (p.birth_date - datetime.timedelta(days=rng.randint(1, 400))).isoformat()


def _underage(gen: SurgeGenerator, body: dict[str, Any], person: Registrant) -> Any:
    # The NIK spells the birth date, so only the age rule fails.
    nik, born = gen.underage()
    body["nik"], body["birth_date"] = nik, born.isoformat()
    return body


def _digits(text: str) -> int:
    return int("".join(char for char in text if char.isdigit()))


_WRONG_TYPES: Final[dict[str, _BadValue]] = {
    "nik": lambda rng, p: rng.choice((_digits(p.nik), None)),
    "full_name": lambda rng, p: rng.choice((p.full_name.split(" "), None, 0)),
    "email": lambda rng, p: rng.choice(([p.email], None, True)),
    "phone": lambda rng, p: rng.choice((_digits(p.phone), None)),
    "birth_date": lambda rng, p: rng.choice((
        _digits(p.birth_date.isoformat()), None,
        {"day": p.birth_date.day, "month": p.birth_date.month, "year": p.birth_date.year},
    )),
    "consent": lambda rng, p: rng.choice(("true", 1, "yes", None)),
}


def _not_an_object(gen: SurgeGenerator, body: dict[str, Any], person: Registrant) -> Any:
    # A list around the object, null, or the object encoded twice (a JSON string).
    return gen._rng.choice(([body], None, orjson.dumps(body).decode()))


def _malformed(gen: SurgeGenerator, body: dict[str, Any], person: Registrant) -> bytes:
    text = orjson.dumps(body)
    rng = gen._rng
    return rng.choice((
        text[: rng.randrange(1, len(text))], text[:-1] + b",}", repr(body).encode(), b"",
        "&".join(f"{name}={value}" for name, value in body.items()).encode(),
    ))


def _with_unknown_field(gen: SurgeGenerator, body: dict[str, Any], person: Registrant) -> Any:
    return {**body, UNKNOWN_KEY: "TEMAN"}


_BUILDERS: Final[dict[str, _Builder]] = {
    "invalid:nik:invalid_format": _field("nik", _bad_nik_format),
    "invalid:nik:invalid_region": _field("nik", _bad_nik_region),
    "invalid:nik:invalid_date": _field("nik", _bad_nik_date),
    "invalid:nik:invalid_serial": _field("nik", lambda rng, p: p.nik[:12] + "0000"),
    "invalid:full_name:too_short": _field("full_name", lambda rng, p: rng.choice(("", " ", "  "))),
    "invalid:full_name:too_long": _field("full_name", _long_name),
    "invalid:full_name:invalid_characters": _field("full_name", _bad_name),
    "invalid:email:invalid_format": _field("email", _bad_email),
    "invalid:email:too_long": _field("email", _long_email),
    "invalid:phone:invalid_format": _field("phone", _bad_phone),
    "invalid:birth_date:invalid_date": _field("birth_date", _bad_birth_date),
    "invalid:birth_date:birth_date_mismatch": _field("birth_date", _mismatched_birth_date),
    "invalid:birth_date:underage": _underage,
    "invalid:consent:must_be_true": _field("consent", lambda rng, p: False),
    **{f"invalid:{name}:required": _field(name, lambda rng, p: _MISSING) for name in _FIELDS},
    **{f"invalid:{name}:wrong_type": _field(name, bad) for name, bad in _WRONG_TYPES.items()},
    f"invalid:{UNKNOWN_KEY}:unknown_field": _with_unknown_field,
    "invalid:body:wrong_type": _not_an_object,
    MALFORMED_JSON: _malformed,
}
SurgeGenerator.INVALID_KINDS = tuple(_BUILDERS)
