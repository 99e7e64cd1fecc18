"""Storing batches in PostgreSQL: states, idempotency, outbox, counters, hand-off."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from config.settings import Settings
from database.funnel import funnel_counts
from loadtest.registrants import Registrant, RegistrantFactory
from queueing.envelope import Envelope
from queueing.keys import Partition
from tests.support import seal_people, stream_range
from workers.drain.handoff import KINDS, Handoff
from workers.drain.store import fence, forget_handoffs, refill, store_batch
from workers.runtime.leases import LeaseLost

FACTORY = RegistrantFactory()


def people(count: int) -> list[Registrant]:
    return [FACTORY.make() for _ in range(count)]


async def states(connection: asyncpg.Connection) -> dict[uuid.UUID, tuple[str, str, str]]:
    rows = await connection.fetch(
        "SELECT registration_id, state::text, email_verification::text, nik_verification::text"
        " FROM registrations")
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def rid(envelope: Envelope) -> uuid.UUID:
    return uuid.UUID(bytes=envelope.registration_id)


async def outbox(connection: asyncpg.Connection) -> list[tuple[uuid.UUID, int]]:
    """Every registration waiting in the outbox, with its partition (a repeat shows twice)."""
    rows = await connection.fetch("SELECT unnest(registration_ids), partition"
                                  " FROM verification_handoffs")
    return sorted((row[0], row[1]) for row in rows)


async def test_a_batch_is_stored_accepted_with_pending_checks(
    pg: asyncpg.Connection, test_settings: Settings
) -> None:
    envelopes = seal_people(test_settings, people(3))

    result = await store_batch(pg, 0, 0, envelopes)

    assert result.counts == Counter(stored=3, accepted=3) and result.stored == 3
    assert await states(pg) == dict.fromkeys(map(rid, envelopes),
                                                ("accepted", "pending", "pending"))
    row = await pg.fetchrow("SELECT * FROM registrations WHERE registration_id = $1",
                               rid(envelopes[0]))
    assert row is not None
    assert row["sealed"] == envelopes[0].sealed and row["key_id"] == envelopes[0].key_id
    assert row["nik_hash"] == envelopes[0].nik_hash
    assert row["received_at"].timestamp() * 1000 == pytest.approx(envelopes[0].received_at_ms)
    # One outbox row for the batch, holding every accepted id once.
    assert await pg.fetchval("SELECT count(*) FROM verification_handoffs") == 1
    assert await outbox(pg) == sorted((rid(e), 0) for e in envelopes)
    assert result.handoff is not None
    assert sorted(result.handoff.uuids()) == sorted(map(rid, envelopes))


async def test_a_redelivered_batch_changes_nothing(
    pg: asyncpg.Connection, test_settings: Settings
) -> None:
    envelopes = seal_people(test_settings, people(4))
    await store_batch(pg, 0, 0, envelopes[:2])
    before = await states(pg)

    again = await store_batch(pg, 0, 1, envelopes)

    assert again.counts == Counter(stored=2, accepted=2)
    assert again.handoff is not None
    assert again.handoff.uuids() == sorted([rid(envelopes[2]), rid(envelopes[3])])
    after = await states(pg)
    assert len(after) == 4 and all(after[key] == value for key, value in before.items())
    assert (await funnel_counts(pg))["stored"] == 4
    # The repeat added an outbox row for the two new ones only.
    assert await outbox(pg) == sorted((rid(e), 0) for e in envelopes)


async def test_a_write_under_an_older_lease_epoch_is_refused_and_writes_nothing(
    pg: asyncpg.Connection, test_settings: Settings
) -> None:
    first, stale, later, elsewhere = (seal_people(test_settings, people(3)) for _ in range(4))
    await store_batch(pg, 3, 0, first, epoch=200)
    relayed = (await outbox(pg))[:1]
    handoff_ids = [row[0] for row in await pg.fetch("SELECT handoff_id FROM verification_handoffs")]

    # A worker whose lease a successor (epoch 200) has written under: nothing
    # of its batch, its counters or its outbox deletes lands.
    with pytest.raises(LeaseLost):
        await store_batch(pg, 3, 0, stale, handoff_ids, epoch=100)
    with pytest.raises(LeaseLost):
        await fence(pg, 3, 199)

    assert set(await states(pg)) == {rid(e) for e in first}
    assert (await funnel_counts(pg))["stored"] == 3
    assert (await outbox(pg))[:1] == relayed
    # The holder itself writes on, and a newer one after it; other partitions are apart.
    await store_batch(pg, 3, 0, later, epoch=200)
    await store_batch(pg, 3, 0, stale, epoch=201)
    await store_batch(pg, 4, 0, elsewhere, epoch=1)
    assert len(await states(pg)) == 12
    fences = await pg.fetch("SELECT partition, epoch FROM drain_fences")
    assert {row["partition"]: row["epoch"] for row in fences} == {3: 201, 4: 1}


@pytest.mark.parametrize("same_batch", [True, False])
async def test_the_later_registration_of_a_nik_or_email_is_a_duplicate(
    pg: asyncpg.Connection, test_settings: Settings, same_batch: bool
) -> None:
    first, third = people(2)
    same_nik = FACTORY.same_nik_as(first)
    # Emails compare lower-cased: the door hashes the normalised address.
    same_email = dataclasses.replace(third, email=first.email.upper())
    envelopes = seal_people(test_settings, [first, same_nik, same_email])

    if same_batch:
        await store_batch(pg, 0, 0, list(reversed(envelopes)))
    else:
        await store_batch(pg, 0, 0, envelopes[:1])
        await store_batch(pg, 1, 0, envelopes[1:])

    assert await states(pg) == {
        rid(envelopes[0]): ("accepted", "pending", "pending"),
        rid(envelopes[1]): ("duplicate", "skipped", "skipped"),
        rid(envelopes[2]): ("duplicate", "skipped", "skipped"),
    }
    assert [registration for registration, _ in await outbox(pg)] == [rid(envelopes[0])]


async def test_a_duplicate_does_not_make_later_ones_duplicates(
    pg: asyncpg.Connection, test_settings: Settings
) -> None:
    first, third = people(2)
    # second repeats first's NIK (a duplicate); third repeats only second's email,
    # which no registration that counts has yet.
    second = FACTORY.same_nik_as(first)
    third = dataclasses.replace(third, email=second.email)
    envelopes = seal_people(test_settings, [first, second, third])

    await store_batch(pg, 0, 0, envelopes)

    assert [(await states(pg))[rid(e)][0] for e in envelopes] == [
        "accepted", "duplicate", "accepted"]


async def test_a_blacklisted_nik_is_ineligible_unless_a_duplicate(
    pg: asyncpg.Connection, test_settings: Settings
) -> None:
    banned, fine = people(2)
    again = FACTORY.same_nik_as(banned)
    envelopes = seal_people(test_settings, [banned, again, fine])
    await pg.execute("INSERT INTO nik_blacklist (nik_hash, reason) VALUES ($1, 'test')",
                        envelopes[0].nik_hash)

    await store_batch(pg, 0, 0, envelopes)

    assert [(await states(pg))[rid(e)] for e in envelopes] == [
        ("ineligible", "skipped", "skipped"),
        ("duplicate", "skipped", "skipped"),
        ("accepted", "pending", "pending"),
    ]
    assert await funnel_counts(pg) == {"stored": 3, "accepted": 1, "duplicate": 1,
                                          "ineligible": 1}


async def test_batches_racing_in_two_partitions_store_one_accepted(
    migrated_dsn: str, pg: asyncpg.Connection, test_settings: Settings
) -> None:
    batch_a = people(50)
    batch_b = [FACTORY.same_nik_as(person) for person in batch_a]
    envelopes_a = seal_people(test_settings, batch_a)
    envelopes_b = seal_people(test_settings, batch_b)
    other = await asyncpg.connect(migrated_dsn)
    try:
        await asyncio.gather(store_batch(pg, 0, 0, envelopes_a),
                             store_batch(other, 1, 1, envelopes_b))
    finally:
        await other.close()

    rows = await states(pg)
    assert len(rows) == 100
    for a, b in zip(envelopes_a, envelopes_b, strict=True):
        assert sorted((rows[rid(a)][0], rows[rid(b)][0])) == ["accepted", "duplicate"]
    counts = await funnel_counts(pg)
    assert counts == {"stored": 100, "accepted": 50, "duplicate": 50}


async def test_hand_off_adds_each_job_once(
    pg: asyncpg.Connection, redis_client: Redis, test_settings: Settings
) -> None:
    envelopes = seal_people(test_settings, people(3))
    result = await store_batch(pg, 2, 0, envelopes)
    handoff = Handoff(redis_client, 3600)
    ids = [rid(e) for e in envelopes]
    assert result.handoff is not None

    assert await handoff.hand_off([result.handoff]) == 6
    await forget_handoffs(pg, [result.handoff.handoff_id])
    assert await outbox(pg) == []
    # Putting its row back (a crash before the delete) and relaying it again
    # from the refill adds nothing.
    await pg.execute(
        "INSERT INTO verification_handoffs (handoff_id, partition, registration_ids, created_at)"
        " OVERRIDING SYSTEM VALUE VALUES ($1, 2, $2, now() - interval '1 hour')",
        result.handoff.handoff_id, ids)
    every = list(range(test_settings.queue.partitions))
    relayed = await refill(pg, handoff, every, every, 60, 100)
    assert (relayed.added, relayed.complete()) == (0, [result.handoff.handoff_id])  # no new job
    assert await outbox(pg) == []

    for kind in KINDS:
        jobs = await stream_range(redis_client, Partition(2).verification(kind))
        assert sorted(uuid.UUID(bytes=fields[b"r"]) for _, fields in jobs) == sorted(ids)


async def test_a_failed_hand_off_keeps_the_jobs(
    pg: asyncpg.Connection, test_settings: Settings
) -> None:
    envelopes = seal_people(test_settings, people(1))
    result = await store_batch(pg, 0, 0, envelopes)
    assert result.handoff is not None
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        with pytest.raises(RedisError):
            await Handoff(dead, 60).hand_off([result.handoff])
    finally:
        await dead.aclose()
    assert await outbox(pg) == [(rid(envelopes[0]), 0)]


async def test_a_batch_with_nothing_accepted_writes_no_outbox_row(
    pg: asyncpg.Connection, test_settings: Settings
) -> None:
    envelopes = seal_people(test_settings, people(2))
    await store_batch(pg, 0, 0, envelopes)

    again = await store_batch(pg, 0, 0, envelopes)

    assert again.counts == Counter() and again.handoff is None
    assert await pg.fetchval("SELECT count(*) FROM verification_handoffs") == 1


async def test_the_next_batch_deletes_the_outbox_rows_already_relayed(
    pg: asyncpg.Connection, test_settings: Settings
) -> None:
    first, second = (seal_people(test_settings, people(2)) for _ in range(2))
    earlier = await store_batch(pg, 0, 0, first)
    assert earlier.handoff is not None

    # Its jobs reached Redis: the worker passes its row to the next statement.
    await store_batch(pg, 1, 0, second, [earlier.handoff.handoff_id])

    assert await outbox(pg) == sorted((rid(e), 1) for e in second)


async def test_a_batch_that_fails_deletes_no_outbox_row(
    pg: asyncpg.Connection, test_settings: Settings
) -> None:
    envelopes = seal_people(test_settings, people(2))
    earlier = await store_batch(pg, 0, 0, envelopes[:1])
    assert earlier.handoff is not None
    # PostgreSQL refuses a time this far out (timestamp out of range).
    broken = [dataclasses.replace(envelopes[1], received_at_ms=2**62)]

    with pytest.raises(asyncpg.PostgresError):
        await store_batch(pg, 0, 0, broken, [earlier.handoff.handoff_id])

    assert await outbox(pg) == [(rid(envelopes[0]), 0)]
    assert (await funnel_counts(pg))["stored"] == 1
