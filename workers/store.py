"""Storing a batch of queued registrations in PostgreSQL, idempotently.

One transaction per batch: one INSERT of every row, in intake order, whose
unique indexes decide what is new (a redelivered entry changes nothing) and
what is a duplicate; the accepted ones' ids written to the outbox as one
row; and the funnel counters moved, so the counters always agree with the
table.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import asyncpg
from asyncpg.pgproto.pgproto import UUID as WireUUID
from asyncpg.pool import PoolConnectionProxy

from queueing.envelope import Envelope
from workers.handoff import Handoff, PendingHandoff
from workers.queries import load

QUERIES: Final = load("store.sql")
ACCEPTED: Final = "accepted"
# A plain connection or one borrowed from a pool: both run the same queries.
Connection = asyncpg.Connection | PoolConnectionProxy


@dataclass(slots=True)
class StoreResult:
    """What one batch changed: the state of each newly stored registration, and
    the outbox row of the accepted ones' jobs (None when none was accepted)."""

    stored: dict[uuid.UUID, str] = field(default_factory=dict)
    handoff: PendingHandoff | None = None

    def counts(self) -> Counter[str]:
        """Newly stored registrations by state, plus `stored` for all of them."""
        counts = Counter(self.stored.values())
        counts["stored"] = len(self.stored)
        return counts


async def store_batch(
    connection: Connection, partition: int, shard: int, envelopes: Sequence[Envelope]
) -> StoreResult:
    """Store the envelopes in one transaction (a redelivered one changes nothing).

    A registration is a duplicate when an earlier one that is not itself a
    duplicate has its NIK or email hash (duplicate is decided before
    ineligible); otherwise ineligible when its NIK is blacklisted.
    """
    # asyncpg's own uuid.UUID subclass: built from the 16 bytes in C, written
    # to the wire without a conversion (uuid.UUID cost the drain ~1 us a row).
    ids: list[uuid.UUID] = [WireUUID(envelope.registration_id) for envelope in envelopes]
    result = StoreResult()
    async with connection.transaction():
        _collect(result, await connection.fetch(QUERIES["insert_batch"],
                                                *_columns(ids, envelopes)))
        if len(result.stored) < len(envelopes):
            # Left out: redelivered (they conflict on the key again and add
            # nothing), or a later registration of a NIK or email: a duplicate.
            lost = [index for index, registration_id in enumerate(ids)
                    if registration_id not in result.stored]
            _collect(result, await connection.fetch(
                QUERIES["insert_duplicates"],
                *_columns([ids[i] for i in lost], [envelopes[i] for i in lost])))
        accepted = [rid for rid, state in result.stored.items() if state == ACCEPTED]
        if accepted:
            handoff_id = await connection.fetchval(QUERIES["insert_handoff"], partition,
                                                   accepted)
            result.handoff = PendingHandoff(handoff_id, partition, accepted)
        await add_counts(connection, shard, result.counts())
    return result


async def add_counts(connection: Connection, shard: int, counts: Counter[str]) -> None:
    """Move funnel counters (inside the caller's transaction)."""
    moved = {name: value for name, value in counts.items() if value}
    if moved:
        await connection.execute(
            QUERIES["add_counts"], shard, list(moved), list(moved.values())
        )


async def hand_off(connection: Connection, handoff: Handoff, pending: PendingHandoff) -> int:
    """Relay one batch's jobs, then delete its outbox row; how many jobs were new."""
    added = await handoff.hand_off([pending])
    # Deleted after the relay: a crash in between leaves the row for the
    # sweeper, and the repeat finds the marker and adds nothing.
    await connection.execute(QUERIES["forget_handoff"], pending.handoff_id)
    return added


async def hand_off_stale(
    connection: Connection, handoff: Handoff, older_than: float, limit: int
) -> int:
    """Relay up to `limit` outbox rows a worker left behind; how many rows were taken.

    Rows, not new jobs: a row whose jobs had arrived before its worker died
    adds none, and the caller must still go on to the next rows.
    """
    async with connection.transaction():
        rows = await connection.fetch(QUERIES["take_stale_handoffs"], older_than, limit)
        await handoff.hand_off([
            PendingHandoff(row["handoff_id"], row["partition"], row["registration_ids"])
            for row in rows])
        return len(rows)


def _collect(result: StoreResult, rows: Iterable[asyncpg.Record]) -> None:
    for row in rows:
        result.stored[row["registration_id"]] = row["state"]


def _columns(ids: Sequence[uuid.UUID], envelopes: Sequence[Envelope]) -> tuple[list[object], ...]:
    """The arrays insert_batch and insert_duplicates unnest, one per column."""
    return (
        list(ids),
        [envelope.received_at_ms for envelope in envelopes],
        [envelope.nik_hash for envelope in envelopes],
        [envelope.email_hash for envelope in envelopes],
        [envelope.key_id for envelope in envelopes],
        [envelope.sealed for envelope in envelopes],
    )
