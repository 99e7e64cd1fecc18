"""Partition leases: one drain worker at a time stores a partition, in order."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import asyncpg
import pytest

from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from queueing.envelope import STREAM_FIELD, Envelope
from queueing.keys import STORE_GROUP, Partition, partitions
from queueing.redis_client import RedisClient
from tests.support import seal_people
from tests.workers.drain_helpers import drain_settings, enqueue, running_drain, wait_drained
from tests.workers.verification_helpers import eventually
from workers.drain.store import store_batch
from workers.runtime.leases import PartitionLeases

# Each test runs on one Redis server and on a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.both_redis


async def holders(redis: RedisClient, settings: Settings) -> list[str | None]:
    """Who holds each partition's lease."""
    found = [await redis.get(p.drain_lease) for p in partitions(settings.queue.partitions)]
    return [value.decode() if isinstance(value, bytes) else value for value in found]


async def states_in_order(pg: asyncpg.Connection, envelopes: list[Envelope]) -> list[str]:
    rows = await pg.fetch("SELECT registration_id, state::text FROM registrations")
    found = {row[0]: row[1] for row in rows}
    return [found[uuid.UUID(bytes=e.registration_id)] for e in envelopes]


async def test_two_workers_split_the_partitions_and_store_each_entry_once(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    settings = drain_settings(test_settings)
    count = settings.queue.partitions
    async with running_drain(settings, name="first"):
        await eventually(lambda: _all_held_by(redis_client, settings, {"first"}), 10,
                         "the first worker holds every partition")
        async with running_drain(settings, name="second"):
            # Within a heartbeat the first gives up its share, the second takes it.
            async def split() -> bool:
                return Counter(await holders(redis_client, settings)) == {
                    "first": count // 2, "second": count - count // 2}
            await eventually(split, 10, "the partitions split in two")
            envelopes = seal_people(settings, [registrants.make() for _ in range(300)])
            await enqueue(redis_client, settings, envelopes)
            await wait_drained(redis_client, settings)
        # The second gave its leases up as it stopped; the first takes them back.
        await eventually(lambda: _all_held_by(redis_client, settings, {"first"}), 10,
                         "the first worker holds every partition again")

    assert await pg.fetchval("SELECT count(*) FROM registrations") == 300
    assert await holders(redis_client, settings) == [None] * count


async def _all_held_by(redis: RedisClient, settings: Settings, names: set[str]) -> bool:
    return set(await holders(redis, settings)) == names


async def test_with_two_workers_the_earlier_registration_of_a_nik_is_accepted(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    # Small batches, so a NIK's two registrations land in different batches,
    # which two workers storing one partition at once could store either way.
    settings = drain_settings(test_settings, batch_size=3)
    firsts = [registrants.make() for _ in range(60)]
    envelopes = seal_people(settings, firsts + [registrants.same_nik_as(p) for p in firsts])
    async with running_drain(settings, name="first"), running_drain(settings, name="second"):
        await enqueue(redis_client, settings, envelopes)
        await wait_drained(redis_client, settings)

    assert await states_in_order(pg, envelopes) == ["accepted"] * 60 + ["duplicate"] * 60


async def test_a_dead_workers_partitions_are_taken_when_its_leases_expire(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    settings = drain_settings(test_settings)  # leases last claim_idle_seconds: 1 s
    async with running_drain(settings):
        pass  # creates the consumer groups
    firsts = [registrants.make() for _ in range(20)]
    envelopes = seal_people(settings, firsts + [registrants.same_nik_as(p) for p in firsts])
    await enqueue(redis_client, settings, envelopes[:20])
    # A worker read the first registrations and died with their leases held.
    leased_at = time.monotonic()
    for partition in partitions(settings.queue.partitions):
        await redis_client.set(partition.drain_lease, "ghost", px=1000)
        await redis_client.xreadgroup(STORE_GROUP, "ghost", {partition.stream: ">"})
    await enqueue(redis_client, settings, envelopes[20:])

    async with running_drain(settings, name="heir"):
        await wait_drained(redis_client, settings, within=15)

    # Not before the leases expired; then the ghost's entries went first, in
    # order, though they had been idle for less than claim_idle_seconds.
    assert time.monotonic() - leased_at >= 0.99
    assert await states_in_order(pg, envelopes) == ["accepted"] * 20 + ["duplicate"] * 20
    assert await holders(redis_client, settings) == [None] * settings.queue.partitions
    assert Partition(0).drain_lease.startswith("gelombang:{p0}:")


async def _store_statements(pg: asyncpg.Connection, state: str, waiting: bool = False) -> int:
    """The drain's store statements in this state (waiting on a lock, if asked)."""
    return int(await pg.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gelombang-worker'"
        # store_batch's opening comment (the query text is cut at 1 KiB).
        " AND query LIKE '-- A whole batch in one statement%' AND state = $1"
        " AND ($2::bool IS FALSE OR wait_event_type = 'Lock')", state, waiting))


async def test_a_worker_that_lost_its_lease_cannot_write_after_its_successor(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    settings = drain_settings(test_settings)  # leases last claim_idle_seconds: 1 s
    partition = Partition(0)
    envelopes = seal_people(settings, [registrants.make() for _ in range(10)])
    for envelope in envelopes:
        await redis_client.xadd(partition.stream, {STREAM_FIELD: envelope.encode()})
    (successors,) = seal_people(settings, [registrants.make()])
    # PostgreSQL holds the worker's statement (as a hung server would).
    blocker = await asyncpg.connect(settings.postgres.dsn)
    hold = blocker.transaction()
    await hold.start()
    await blocker.execute("LOCK TABLE registrations IN EXCLUSIVE MODE")
    try:
        async with running_drain(settings, name="stale"):
            await eventually(lambda: _waits(pg), 10, "the worker's statement waits")
            # Meanwhile its lease moved on (as if it had been paused past it) ...
            heir = PartitionLeases(redis_client, "heir", settings.queue.partitions, 1.0)

            async def take_over() -> bool:
                await redis_client.delete(partition.drain_lease)
                return await heir.hold(partition)
            await eventually(take_over, 5, "the successor takes the lease")
            # ... and the successor wrote under it first.
            await store_batch(blocker, 0, 0, [successors], epoch=heir.epochs[0])
            await hold.commit()

            async def ran() -> bool:
                return await _store_statements(pg, "active") == 0
            await eventually(ran, 10, "the stale statement ran")
            # It wrote nothing: not one of its batch's registrations.
            assert await _stored(pg) == {_id(successors)}
            # Nobody renews the successor's lease; the worker takes it again, reclaims
            # its batch and stores it.
            await wait_drained(redis_client, settings, within=15)
    finally:
        await blocker.close()

    assert await _stored(pg) == {_id(e) for e in [successors, *envelopes]}
    assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 0


async def _waits(pg: asyncpg.Connection) -> bool:
    return await _store_statements(pg, "active", waiting=True) > 0


async def _stored(pg: asyncpg.Connection) -> set[uuid.UUID]:
    return {row[0] for row in await pg.fetch("SELECT registration_id FROM registrations")}


def _id(envelope: Envelope) -> uuid.UUID:
    return uuid.UUID(bytes=envelope.registration_id)
