"""Partition leases: one drain worker at a time stores a partition, in order."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import asyncpg
import pytest

from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from queueing.envelope import Envelope
from queueing.keys import STORE_GROUP, Partition, partitions
from queueing.redis_client import RedisClient
from tests.support import seal_people
from tests.workers.drain_helpers import drain_settings, enqueue, running_drain, wait_drained
from tests.workers.verification_helpers import eventually

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
