"""Entries PostgreSQL refuses: only a refusal of the entry counts, its neighbours are stored,
and it is dead-lettered at the max_refusals-th while its partition goes on."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from config.settings import Settings
from database.funnel import funnel_counts
from loadtest.registrants import RegistrantFactory
from queueing.envelope import STREAM_FIELD, Envelope
from queueing.keys import STORE_GROUP, Partition
from queueing.redis_client import RedisClient
from tests.support import seal_people, stream_range
from tests.workers.drain_helpers import drain_settings, running_drain, wait_drained
from tests.workers.verification_helpers import eventually

PARTITION = Partition(0)
# A key id the drain cannot tell from any other, which the test's constraint refuses.
POISON_KEY_ID = "poison"


@pytest.fixture
async def refusing_pg(pg: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """The store's database with a constraint that refuses one kind of row (SQLSTATE 23514)."""
    await pg.execute("ALTER TABLE registrations ADD CONSTRAINT test_refuses_poison"
                     f" CHECK (key_id <> '{POISON_KEY_ID}') NOT VALID")
    try:
        yield pg
    finally:
        await pg.execute("ALTER TABLE registrations DROP CONSTRAINT IF EXISTS test_refuses_poison")


async def add_in_order(redis: RedisClient, envelopes: list[Envelope]) -> list[bytes]:
    """Append the envelopes to one partition's stream, in this order; their entry ids."""
    ids = [await redis.xadd(PARTITION.stream, {STREAM_FIELD: envelope.encode()})
           for envelope in envelopes]
    return [entry_id if isinstance(entry_id, bytes) else entry_id.encode() for entry_id in ids]


async def stored_ids(pg: asyncpg.Connection) -> set[uuid.UUID]:
    return {row[0] for row in await pg.fetch("SELECT registration_id FROM registrations")}


async def rollbacks(pg: asyncpg.Connection) -> int:
    """Transactions the database has rolled back (each refused store attempt is one)."""
    await pg.execute("SELECT pg_stat_clear_snapshot()")
    return int(await pg.fetchval("SELECT xact_rollback FROM pg_stat_database"
                                 " WHERE datname = current_database()"))


def ids_of(envelopes: list[Envelope]) -> set[uuid.UUID]:
    return {uuid.UUID(bytes=envelope.registration_id) for envelope in envelopes}


async def test_a_refused_entry_is_dead_lettered_after_max_refusals_and_its_batch_stored(
    refusing_pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    settings = drain_settings(test_settings, batch_size=50, max_refusals=3)
    good = seal_people(settings, [registrants.make() for _ in range(40)])
    poison = dataclasses.replace(seal_people(settings, [registrants.make()])[0],
                                 key_id=POISON_KEY_ID)
    # One batch, the poison in its middle: bisection stores both sides around it.
    await add_in_order(redis_client, [*good[:23], poison, *good[23:]])

    async with running_drain(settings):
        await wait_drained(redis_client, settings, within=20)
        later = seal_people(settings, [registrants.make() for _ in range(5)])
        await add_in_order(redis_client, later)  # the partition goes on
        await wait_drained(redis_client, settings, within=20)

    assert await stored_ids(refusing_pg) == ids_of(good + later)
    letters = await refusing_pg.fetch("SELECT reason, deliveries, payload FROM dead_letters")
    assert [(row["reason"], row["deliveries"]) for row in letters] == [
        ("refused 3 times by PostgreSQL (SQLSTATE 23514)", 3)]
    # Kept as queued, for a replay once what refused it is fixed.
    assert letters[0]["payload"] == poison.encode()
    assert len(await stream_range(redis_client, PARTITION.dead_letters)) == 1
    assert (await funnel_counts(refusing_pg))["dead_letter"] == 1
    assert await redis_client.exists(PARTITION.drain_refusals) == 0


async def test_refusals_are_counted_across_worker_restarts(
    refusing_pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    settings = drain_settings(test_settings, max_refusals=3, retry_max_seconds=2.0)
    poison = dataclasses.replace(seal_people(settings, [registrants.make()])[0],
                                 key_id=POISON_KEY_ID)
    (entry_id,) = await add_in_order(redis_client, [poison])

    async def refused_once() -> bool:
        return await redis_client.hget(PARTITION.drain_refusals, entry_id) is not None

    async with running_drain(settings, name="first"):
        await eventually(refused_once, 10, "a first refusal")
    # Stopped between two tries: the entry waits for the next holder, its count with it.
    first = int(await redis_client.hget(PARTITION.drain_refusals, entry_id) or 0)
    assert 1 <= first < 3
    assert int((await redis_client.xpending(PARTITION.stream, STORE_GROUP))["pending"]) == 1
    assert await refusing_pg.fetchval("SELECT count(*) FROM dead_letters") == 0

    async with running_drain(settings, name="second"):
        await wait_drained(redis_client, settings, within=20)

    row = await refusing_pg.fetchrow("SELECT reason, deliveries FROM dead_letters")
    assert row is not None and row["deliveries"] == 3
    assert await redis_client.exists(PARTITION.drain_refusals) == 0


async def test_a_received_at_postgresql_cannot_hold_is_dead_lettered_at_once(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    settings = drain_settings(test_settings, batch_size=50)
    good = seal_people(settings, [registrants.make() for _ in range(10)])
    far = dataclasses.replace(seal_people(settings, [registrants.make()])[0],
                              received_at_ms=2**62)
    await add_in_order(redis_client, [*good[:5], far, *good[5:]])

    async with running_drain(settings):
        await wait_drained(redis_client, settings)

    assert await stored_ids(pg) == ids_of(good)
    letters = await pg.fetch("SELECT reason FROM dead_letters")
    assert [row["reason"] for row in letters] == ["undecodable: received_at out of range"]
    assert await redis_client.exists(PARTITION.drain_refusals) == 0


async def test_a_read_only_postgresql_refuses_nothing_and_dead_letters_nothing(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    # A standby promoted late, or a failover to a read-only node: every write
    # fails with SQLSTATE 25006, which says nothing about the entries.
    settings = drain_settings(test_settings)
    envelopes = seal_people(settings, [registrants.make() for _ in range(20)])
    await add_in_order(redis_client, envelopes)
    database = await pg.fetchval("SELECT current_database()")
    await pg.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    try:
        before = await rollbacks(pg)
        async with running_drain(settings):
            async def refused_thrice() -> bool:
                return await rollbacks(pg) >= before + 3
            await eventually(refused_thrice, 15, "three store attempts refused")
            assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 0
            assert await redis_client.exists(PARTITION.drain_refusals) == 0
            await pg.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
            # The worker's connections were opened read-only: end them, as a failover does.
            await pg.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE application_name = 'gelombang-worker'")
            await wait_drained(redis_client, settings, within=20)
    finally:
        await pg.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')

    assert await stored_ids(pg) == ids_of(envelopes)
    assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 0
