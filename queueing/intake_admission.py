"""The door's way into the queue, in one call: seal, name, pick the partition, admit.

`IntakeAdmission.submit` is everything a door does with a validated
registration; the HTTP handler (intake/registrations.py) only turns its
Decision, or its error, into an answer. Tests and benchmarks that make
registrations "as the door does" call `Sealing.seal` and `partition_of` from
here, so the partition rule is written once.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from config.settings import KeySettings
from queueing.admission import REPLAY_ONLY, TICKETED, Candidate, Decision, Outcome
from queueing.envelope import Envelope, PersonalData, seal_registration, sealed_entry
from queueing.errors import QueueUnavailable
from queueing.grouping import GroupAdmitter
from queueing.ids import RegistrationIds
from queueing.keys import (
    IdempotencyRecord,
    Partition,
    partition_for_digest,
    partition_for_idempotency_key,
)
from queueing.line import (
    Line,
    LineUnknown,
    Place,
    TicketExpired,
    TicketNotOurs,
    TicketUsedError,
)
from queueing.live_settings import LiveAdmission
from queueing.queue_tickets import Ticket, ticket_id
from queueing.redis_client import REDIS_UNAVAILABLE
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


def ticket_idempotency_key(ticket: Ticket) -> str:
    """The idempotency key a ticket's registration is admitted under: one per ticket."""
    return "q" + ticket.ticket_id.hex()


class IntakeAdmission:
    """Seals, names and admits registrations: the one way a door puts one in the queue.

    With a waiting room (`line`), a registration turned away joins the line
    instead, and one that holds its turn is admitted without a token.
    """

    def __init__(self, sealing: Sealing, live: LiveAdmission, admitter: GroupAdmitter,
                 partitions: int, line: Line | None = None) -> None:
        self.sealing = sealing
        self._live = live
        self._admitter = admitter
        self._partitions = partitions
        self.line = line
        # When the backlog was last found full (monotonic): the line pauses a while.
        self.backlog_full_at = float("-inf")

    def backlog_was_full(self, within: float = 5.0) -> bool:
        """Whether an admission here found the backlog full in the last `within` seconds."""
        return time.monotonic() - self.backlog_full_at < within

    async def submit(self, data: PersonalData, idempotency_key: str | None,
                     ticket: Ticket | None = None) -> Decision:
        """Admission's decision for one validated registration.

        Raises what the admitter raises (all QueueingError): QueueUnavailable
        (Shed among them) when nothing was stored, OutcomeUnknown when it may
        have been, Overloaded when this process holds its bound of requests.
        With a ticket, also the line's TicketError types (queueing/line.py).
        """
        line = self.line
        if (idempotency_key is None and ticket is None and not self._live.policy.open):
            # Closed: decided without Redis. A keyed request still goes to Redis,
            # since a replay of an earlier admission must get its 202.
            return Decision(Outcome.CLOSED)
        registration_id, nik_hash, entry = self.sealing.seal_entry(data)
        if line is None:
            return await self._admit(registration_id, nik_hash, entry, idempotency_key)
        if ticket is not None:
            return await self._with_ticket(line, ticket, idempotency_key, registration_id,
                                           nik_hash, entry)
        if line.queues_first():
            # No one overtakes the line: an unkeyed registration joins it; a keyed
            # one first learns whether its key was admitted before (a retry).
            if idempotency_key is not None:
                decision = await self._admit(registration_id, nik_hash, entry,
                                             idempotency_key, REPLAY_ONLY)
                if decision.outcome is not Outcome.LIMITED:
                    return decision
            queued = await self._join(line, Outcome.QUEUED, idempotency_key, registration_id,
                                      nik_hash, entry)
            if queued is not None:
                return queued
        decision = await self._admit(registration_id, nik_hash, entry, idempotency_key)
        if decision.outcome is Outcome.LIMITED or decision.outcome is Outcome.BACKLOG_FULL:
            outcome = Outcome.QUEUED if decision.outcome is Outcome.LIMITED else decision.outcome
            return await self._join(line, outcome, idempotency_key, registration_id, nik_hash,
                                    entry) or decision
        return decision

    async def _admit(self, registration_id: bytes, nik_hash: bytes, entry: bytes,
                     idempotency_key: str | None, mode: bytes = b"") -> Decision:
        partition = partition_of(nik_hash, idempotency_key, self._partitions)
        decision = await self._admitter.admit(
            partition, Candidate(registration_id, entry, idempotency_key, mode))
        if decision.outcome is Outcome.BACKLOG_FULL:
            self.backlog_full_at = time.monotonic()
        return decision

    async def _join(self, line: Line, outcome: Outcome, idempotency_key: str | None,
                    registration_id: bytes, nik_hash: bytes, entry: bytes) -> Decision | None:
        """This NIK's place in the line as a decision, or None when the line cannot be
        reached (the caller answers as it would without a waiting room). A NIK whose
        turn it is (come back without its ticket) is admitted on its turn."""
        try:
            place = await line.join(nik_hash)
        except TicketExpired:
            return Decision(Outcome.CLOSED)  # the wave closed: no one joins any more
        except (*REDIS_UNAVAILABLE, LineUnknown):
            return None
        if place.state == "registered":
            assert place.registration_id is not None
            return Decision(Outcome.REPLAYED, place.registration_id)
        if place.state == "your_turn":
            return await self._on_turn(line, place, idempotency_key, registration_id,
                                       nik_hash, entry)
        return Decision(outcome, place=place)

    async def _with_ticket(self, line: Line, ticket: Ticket, idempotency_key: str | None,
                           registration_id: bytes, nik_hash: bytes, entry: bytes) -> Decision:
        if ticket_id(ticket.wave, nik_hash) != ticket.ticket_id:
            raise TicketNotOurs
        try:
            place = await line.place(ticket)
        except TicketUsedError as used:
            # Used: by this request's key (a retry, answered its 202 again), or by
            # another (claim() raises, answered 409).
            place = used.place
        if place.state not in ("your_turn", "registered"):
            return Decision(Outcome.QUEUED, place=place)
        return await self._on_turn(line, place, idempotency_key, registration_id, nik_hash,
                                   entry)

    async def _on_turn(self, line: Line, place: Place, idempotency_key: str | None,
                       registration_id: bytes, nik_hash: bytes, entry: bytes) -> Decision:
        """Admit a registration on its ticket's turn, without a token.

        It is admitted under the client's own Idempotency-Key (the ticket's when it
        sent none), so a retry replays as any keyed retry does; the turn is first
        claimed for that key in the line, so another request cannot use the same
        ticket (TicketUsedError, answered 409).
        """
        ticket = place.ticket
        key = idempotency_key or ticket_idempotency_key(ticket)
        await line.claim(place, key)
        try:
            decision = await self._admit(registration_id, nik_hash, entry, key, TICKETED)
        except QueueUnavailable:
            # Certainly not stored: the turn is free again for any request.
            with contextlib.suppress(*REDIS_UNAVAILABLE):
                await line.release(ticket, key)
            raise
        if decision.outcome is Outcome.ADMITTED or decision.outcome is Outcome.REPLAYED:
            assert decision.registration_id is not None
            if decision.outcome is Outcome.ADMITTED:
                decision.place = place
            # For the ticket's later polls; the registration is queued either way.
            with contextlib.suppress(*REDIS_UNAVAILABLE):
                await line.registered(ticket, decision.registration_id)
        elif decision.outcome is Outcome.BACKLOG_FULL:
            with contextlib.suppress(*REDIS_UNAVAILABLE):
                await line.release(ticket, key)
            decision.place = place
        return decision

    async def close(self) -> None:
        """Wait for the round trips in flight and their checks (pending groups are flushed)."""
        await self._admitter.close()


