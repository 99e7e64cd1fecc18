"""Queued registrations for the drain benchmark, made as the door makes them.

Every registration goes through the real path: a made-up registrant
(`loadtest.registrants`), `validate_registration`, then the door's own
`Sealing.seal` (queueing/intake_admission.py) under random keys, as
`tests/support.py::seal_people` does. Every
`duplicate_every`-th one reuses the NIK of a recent earlier one, so the drain's
duplicate path is exercised. Ids are UUIDv7 one millisecond apart, ending now,
so id order is generation order, as at the door.
"""

from __future__ import annotations

import datetime
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgpack

from intake.validation import validate_registration
from loadtest.registrants import Registrant, RegistrantFactory
from queueing.envelope import Envelope, PersonalData
from queueing.ids import RegistrationIds
from queueing.intake_admission import Sealing, partition_of
from queueing.sealing import KeyedHasher, Sealer

# The columns the drain writes (database/sql/store.sql insert_staged); the rest default.
COLUMNS = (
    "registration_id", "received_at", "state", "email_verification", "nik_verification",
    "nik_hash", "email_hash", "key_id", "sealed",
)
Row = tuple[uuid.UUID, datetime.datetime, str, str, str, bytes, bytes, str, bytes]
RECENT = 5000  # duplicates reuse the NIK of one of this many latest registrants


def generate(count: int, *, duplicate_every: int = 50, seed: int = 11,
             sealer: Sealer | None = None, hasher: KeyedHasher | None = None,
             make: Callable[[RegistrantFactory], Registrant] | None = None,
             address_sealer: Sealer | None = None) -> list[bytes]:
    """`count` encoded envelopes in intake order, printing progress on stderr.

    Sealed and hashed under random keys unless given the workers' keys, the
    address sealed on its own too as the door does; each registrant from
    `make(factory)` (default: `factory.make()`).
    """
    sealing = Sealing(
        RegistrationIds(os.urandom(32)),
        sealer or Sealer({"bench": os.urandom(32)}, "bench"),
        hasher or KeyedHasher(os.urandom(32)),
        address_sealer or Sealer({"bench": os.urandom(32)}, "bench"),
    )
    factory = RegistrantFactory(seed=seed)
    rng = random.Random(seed)
    today = datetime.date.today()
    first_ms = time.time_ns() // 1_000_000 - count
    recent: list[Registrant] = []
    payloads: list[bytes] = []
    started = time.monotonic()
    for offset in range(count):
        if offset % duplicate_every == duplicate_every - 1 and recent:
            person = factory.same_nik_as(rng.choice(recent))
        else:
            person = make(factory) if make is not None else factory.make()
            if len(recent) < RECENT:
                recent.append(person)
            else:
                recent[offset % RECENT] = person
        checked = validate_registration(person.body(), today)
        if not isinstance(checked, PersonalData):
            raise RuntimeError("a made-up registrant failed validation")
        payloads.append(sealing.seal(checked, first_ms + offset).encode())
        if (offset + 1) % 100_000 == 0 or offset + 1 == count:
            elapsed = time.monotonic() - started
            print(f"  generated {offset + 1:,} envelopes in {elapsed:.0f} s "
                  f"({elapsed / (offset + 1) * 1e6:.0f} µs each)", file=sys.stderr, flush=True)
    return payloads


def load_or_generate(count: int, cache: Path | None) -> list[bytes]:
    """Envelopes from a cache file written by an earlier run, else freshly generated."""
    if cache is not None and cache.exists():
        payloads: list[bytes] = msgpack.unpackb(cache.read_bytes())
        if len(payloads) >= count:
            print(f"  {count:,} envelopes read from {cache}", file=sys.stderr)
            return payloads[:count]
    payloads = generate(count)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(msgpack.packb(payloads))
    return payloads


@dataclass(slots=True)
class Expected:
    """What the drain must end with, worked out from the envelopes themselves."""

    accepted: int
    duplicates: int
    envelope_bytes: float  # mean encoded size


def expected_states(envelopes: Sequence[Envelope]) -> list[str]:
    """Each envelope's state in intake order, as the drain decides it (no blacklist)."""
    niks: set[bytes] = set()
    emails: set[bytes] = set()
    states = []
    for envelope in envelopes:
        if envelope.nik_hash in niks or envelope.email_hash in emails:
            states.append("duplicate")
            continue
        niks.add(envelope.nik_hash)
        emails.add(envelope.email_hash)
        states.append("accepted")
    return states


def copy_rows(payloads: Sequence[bytes]) -> tuple[list[Row], Expected]:
    """The rows the drain would write for these envelopes, as COPY records."""
    envelopes = [Envelope.decode(payload) for payload in payloads]
    states = expected_states(envelopes)
    rows: list[Row] = []
    for envelope, state in zip(envelopes, states, strict=True):
        verification = "pending" if state == "accepted" else "skipped"
        rows.append((
            uuid.UUID(bytes=envelope.registration_id),
            datetime.datetime.fromtimestamp(envelope.received_at_ms / 1000, datetime.UTC),
            state, verification, verification,
            envelope.nik_hash, envelope.email_hash, envelope.key_id, envelope.sealed,
        ))
    accepted = states.count("accepted")
    size = sum(map(len, payloads)) / max(len(payloads), 1)
    return rows, Expected(accepted, len(states) - accepted, size)


def by_partition(payloads: Sequence[bytes], partitions: int) -> Iterator[tuple[int, bytes]]:
    """Each envelope with its partition, as the door picks it (by the NIK hash)."""
    for payload in payloads:
        nik_hash = Envelope.decode(payload).nik_hash
        yield partition_of(nik_hash, None, partitions), payload
