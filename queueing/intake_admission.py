"""The door's way into the queue, in one call: seal, name, pick the partition, admit.

`IntakeAdmission.submit` is everything a door does with a validated
registration; the HTTP handler (intake/registrations.py) only turns its
Decision, or its error, into an answer. Tests and benchmarks that make
registrations "as the door does" call `Sealing.seal` and `partition_of` from
here, so the partition rule is written once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from config.settings import KeySettings
from queueing.admission import Candidate, Decision, Outcome
from queueing.envelope import Envelope, PersonalData, seal_registration, sealed_entry
from queueing.grouping import GroupAdmitter
from queueing.ids import RegistrationIds
from queueing.keys import (
    IdempotencyRecord,
    Partition,
    partition_for_digest,
    partition_for_idempotency_key,
)
from queueing.live_settings import LiveAdmission
from queueing.sealing import KeyedHasher, Sealer


def partition_of(nik_hash: bytes, idempotency_key: str | None, count: int) -> int:
    """The partition the door admits a registration into.

    A keyed request goes where its key's record lives, so a retry meets the
    record its first try left (whatever its body); any other goes by its NIK
    hash, which is uniform.
    """
    if idempotency_key is None:
        return partition_for_digest(nik_hash, count)
    return keyed_partition(idempotency_key, count)


def keyed_partition(idempotency_key: str, count: int) -> int:
    """The partition the door admits a keyed request into, whatever its body."""
    return partition_for_idempotency_key(idempotency_key, count)


def idempotency_record(idempotency_key: str, count: int, ttl: int,
                       now: float) -> IdempotencyRecord:
    """Where the door recorded a keyed admission (keys.py, Partition.idempotency)."""
    partition = Partition(keyed_partition(idempotency_key, count))
    return partition.idempotency(idempotency_key, ttl, now)


@dataclass(frozen=True, slots=True)
class Sealing:
    """The keys a registration is sealed, hashed and named with.

    Frozen: a key reload (intake/key_reload.py) puts a new one in force whole,
    so no registration is sealed with half of the old keys.
    """

    ids: RegistrationIds
    sealer: Sealer
    hasher: KeyedHasher
    # None: version 1 envelopes, as a door before the address keys made them.
    address_sealer: Sealer | None

    @classmethod
    def of(cls, keys: KeySettings, ids: RegistrationIds | None = None) -> Sealing:
        """The configured keys' sealing (address sealing only where address keys are set)."""
        return cls(
            ids or RegistrationIds(keys.hash_key_bytes()),
            Sealer(keys.sealing_key_bytes(), keys.active_sealing_key_id),
            KeyedHasher(keys.hash_key_bytes()),
            Sealer(keys.address_key_bytes(), keys.active_address_key_id)
            if keys.address_keys else None,
        )

    def seal_entry(self, data: PersonalData) -> tuple[bytes, bytes, bytes]:
        """A new registration, issued now: its id, its NIK's keyed hash and its stream
        entry's bytes (`seal(data).encode()` without the Envelope between)."""
        at_ms = time.time_ns() // 1_000_000
        registration_id = self.ids.issue(at_ms)
        nik_hash, entry = sealed_entry(data, registration_id, at_ms, self.sealer, self.hasher,
                                       self.address_sealer)
        return registration_id, nik_hash, entry

    def seal(self, data: PersonalData, received_at_ms: int | None = None) -> Envelope:
        """A new registration's envelope: an id issued at `received_at_ms` (default: now)."""
        at_ms = time.time_ns() // 1_000_000 if received_at_ms is None else received_at_ms
        return seal_registration(data, self.ids.issue(at_ms), at_ms, self.sealer, self.hasher,
                                 self.address_sealer)


class IntakeAdmission:
    """Seals, names and admits registrations: the one way a door puts one in the queue."""

    def __init__(self, sealing: Sealing, live: LiveAdmission, admitter: GroupAdmitter,
                 partitions: int) -> None:
        self.sealing = sealing
        self._live = live
        self._admitter = admitter
        self._partitions = partitions

    async def submit(self, data: PersonalData, idempotency_key: str | None) -> Decision:
        """Admission's decision for one validated registration.

        Raises what the admitter raises (all QueueingError): QueueUnavailable
        (Shed among them) when nothing was stored, OutcomeUnknown when it may
        have been, Overloaded when this process holds its bound of requests.
        """
        if idempotency_key is None and not self._live.policy.open:
            # Closed: decided without Redis. A keyed request still goes to Redis,
            # since a replay of an earlier admission must get its 202.
            return Decision(Outcome.CLOSED)
        registration_id, nik_hash, entry = self.sealing.seal_entry(data)
        partition = partition_of(nik_hash, idempotency_key, self._partitions)
        return await self._admitter.admit(
            partition, Candidate(registration_id, entry, idempotency_key))

    async def close(self) -> None:
        """Wait for the round trips in flight and their checks (pending groups are flushed)."""
        await self._admitter.close()
