"""Storing a batch of queued registrations in PostgreSQL, idempotently.

One statement per batch (`store_batch` in database/sql/store.sql), so one
round trip and one commit: every row inserted in intake order, the unique
indexes deciding what is new (a redelivered entry changes nothing) and what
is a duplicate; the accepted ones' ids written to the outbox as one row; the
funnel counters moved, so they always agree with the table; and the outbox
rows the worker relayed since its previous batch deleted. Every write is
fenced by the worker's lease epoch (`fence`, `LeaseLost`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from asyncpg.pgproto.pgproto import UUID as WireUUID

from database.queries import Connection, load
from queueing.envelope import Envelope
from workers.drain.handoff import Handoff, PendingHandoff, Relayed
from workers.runtime.leases import LeaseLost

QUERIES: Final = load("store.sql")
STATES: Final = ("accepted", "ineligible", "duplicate")



@dataclass(frozen=True, slots=True)
class StoreResult:
    """What one batch changed: how many registrations it newly stored in each
    state, and the outbox row of the accepted ones' jobs (None when none was)."""

    counts: Counter[str]
    handoff: PendingHandoff | None

    @property
    def stored(self) -> int:
        """Registrations newly stored, in any state."""
        return sum(self.counts[state] for state in STATES)


async def store_batch(
    connection: Connection, partition: int, shard: int, envelopes: Sequence[Envelope],
    relayed: Sequence[int] = (), epoch: int = 0,
) -> StoreResult:
    """Store the envelopes in one statement (a redelivered one changes nothing).

    A registration is a duplicate when an earlier one that is not itself a
    duplicate has its NIK or email hash (duplicate is decided before
    ineligible); otherwise ineligible when its NIK is blacklisted. `relayed`:
    outbox rows whose jobs are in Redis, deleted in the same transaction.
    `epoch`: the worker's lease epoch; raises LeaseLost, having written
    nothing, when a newer one has written to the partition.
    """
    row = await connection.fetchrow(
        QUERIES["store_batch"],
        # asyncpg's own uuid.UUID subclass: built from the 16 bytes in C, written
        # to the wire without a conversion (uuid.UUID cost the drain ~1 us a row).
        [WireUUID(envelope.registration_id) for envelope in envelopes],
        [envelope.received_at_ms for envelope in envelopes],
        [envelope.nik_hash for envelope in envelopes],
        [envelope.email_hash for envelope in envelopes],
        [envelope.key_id for envelope in envelopes],
        [envelope.sealed for envelope in envelopes],
        partition, shard, relayed, epoch,
        [envelope.address_key_id for envelope in envelopes],
        [envelope.sealed_address for envelope in envelopes])
    assert row is not None  # the statement always returns its one row
    if not row["fenced_in"]:
        raise LeaseLost
    counts = Counter({state: row[state] for state in STATES if row[state]})
    if counts:
        counts["stored"] = sum(counts.values())
    handoff = (PendingHandoff(row["handoff_id"], partition, row["accepted_ids"])
               if row["handoff_id"] is not None else None)
    return StoreResult(counts, handoff)


async def fence(connection: Connection, partition: int, epoch: int) -> None:
    """Hold the partition's fence for this transaction, or raise LeaseLost."""
    if await connection.fetchval(QUERIES["fence"], partition, epoch) is None:
        raise LeaseLost


async def forget_handoffs(connection: Connection, handoff_ids: Sequence[int]) -> None:
    """Delete outbox rows whose jobs are in Redis (when no next batch will)."""
    if handoff_ids:
        await connection.execute(QUERIES["forget_handoffs"], handoff_ids)


async def mark_handoffs(connection: Connection, kinds: dict[int, tuple[bool, bool]]) -> None:
    """Record which kinds of these outbox rows are on the streams."""
    if kinds:
        await connection.execute(QUERIES["mark_handoffs"], list(kinds),
                                 [email for email, _ in kinds.values()],
                                 [nik for _, nik in kinds.values()])


async def refill(connection: Connection, handoff: Handoff, email_room: Sequence[int],
                 nik_room: Sequence[int], older_than: float, limit: int) -> Relayed:
    """Relay up to `limit` outbox rows whose streams have room, oldest first.

    Rows, not new jobs: a row whose jobs had arrived before its worker died
    adds none, and the caller must still go on to the next rows.
    """
    async with connection.transaction():
        rows = await connection.fetch(QUERIES["take_handoffs"], list(email_room),
                                      list(nik_room), older_than, limit)
        relayed = await handoff.relay([
            PendingHandoff(row["handoff_id"], row["partition"], row["registration_ids"],
                           row["email_relayed"], row["nik_relayed"]) for row in rows])
        await mark_handoffs(connection, relayed.waiting())
        await forget_handoffs(connection, relayed.complete())
        return relayed
