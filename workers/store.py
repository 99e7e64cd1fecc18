"""Storing a batch of queued registrations in PostgreSQL, idempotently.

One transaction per batch: the states are decided (duplicate, ineligible,
accepted), the rows copied into a staging table and inserted with
`ON CONFLICT DO NOTHING` (a redelivered entry changes nothing), the accepted
ones' ids written to the outbox as one row, and the funnel counters moved,
so the counters always agree with the table.
"""

from __future__ import annotations

import datetime
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from queueing.envelope import Envelope
from workers.handoff import Handoff, PendingHandoff
from workers.queries import load

QUERIES: Final = load("store.sql")
ACCEPTED: Final = "accepted"
DUPLICATE: Final = "duplicate"
INELIGIBLE: Final = "ineligible"
# A plain connection or one borrowed from a pool: both run the same queries.
Connection = asyncpg.Connection | PoolConnectionProxy
_STAGING_COLUMNS: Final = (
    "registration_id", "received_at", "state", "nik_hash", "email_hash", "key_id", "sealed",
)


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


def decide_states(
    envelopes: Sequence[Envelope],
    first_niks: set[bytes],
    first_emails: set[bytes],
    blacklisted: set[bytes],
) -> list[str]:
    """The state of each envelope, in order of registration id (intake time).

    A registration is a duplicate when an earlier one that is not itself a
    duplicate has its NIK or email hash (duplicate is decided before
    ineligible); otherwise ineligible when its NIK is blacklisted.
    """
    niks, emails = set(first_niks), set(first_emails)
    states = []
    for envelope in envelopes:
        if envelope.nik_hash in niks or envelope.email_hash in emails:
            states.append(DUPLICATE)
            continue
        niks.add(envelope.nik_hash)
        emails.add(envelope.email_hash)
        states.append(INELIGIBLE if envelope.nik_hash in blacklisted else ACCEPTED)
    return states


async def prepare_connection(connection: Connection) -> None:
    """Per-connection setup for the pool: the staging table."""
    await connection.execute(QUERIES["create_staging"])


async def store_batch(
    connection: Connection, partition: int, shard: int, envelopes: Sequence[Envelope]
) -> StoreResult:
    """Store the envelopes in one transaction (a redelivered one changes nothing)."""
    ordered = sorted(envelopes, key=lambda envelope: envelope.registration_id)
    result = StoreResult()
    async with connection.transaction():
        niks = [envelope.nik_hash for envelope in ordered]
        emails = [envelope.email_hash for envelope in ordered]
        found: dict[str, set[bytes]] = {"nik": set(), "email": set(), "blacklist": set()}
        for row in await connection.fetch(QUERIES["first_registrations"], niks, emails):
            found[row["kind"]].add(row["hash"])
        states = decide_states(ordered, found["nik"], found["email"], found["blacklist"])
        await connection.copy_records_to_table(
            "store_staging", records=_staging_rows(ordered, states), columns=_STAGING_COLUMNS
        )
        _collect(result, await connection.fetch(QUERIES["insert_staged"]))
        lost = [
            uuid.UUID(bytes=envelope.registration_id)
            for envelope in ordered
            if uuid.UUID(bytes=envelope.registration_id) not in result.stored
        ]
        if lost:
            # Redelivered entries conflict again on the key and add nothing;
            # those that lost a race on a NIK or email are stored as duplicates.
            _collect(result, await connection.fetch(QUERIES["insert_lost"], lost))
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
    """Relay outbox rows left by a worker that died before handing them off."""
    async with connection.transaction():
        rows = await connection.fetch(QUERIES["take_stale_handoffs"], older_than, limit)
        return await handoff.hand_off([
            PendingHandoff(row["handoff_id"], row["partition"], row["registration_ids"])
            for row in rows])


def _collect(result: StoreResult, rows: Iterable[asyncpg.Record]) -> None:
    for row in rows:
        result.stored[row["registration_id"]] = row["state"]


def _staging_rows(
    envelopes: Sequence[Envelope], states: Sequence[str]
) -> list[tuple[object, ...]]:
    return [
        (
            uuid.UUID(bytes=envelope.registration_id),
            datetime.datetime.fromtimestamp(envelope.received_at_ms / 1000, datetime.UTC),
            state,
            envelope.nik_hash,
            envelope.email_hash,
            envelope.key_id,
            envelope.sealed,
        )
        for envelope, state in zip(envelopes, states, strict=True)
    ]
