"""The worker runtime on a real Redis: leased loops, batches, reclaiming, stopping."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from redis.asyncio import Redis

from queueing.keys import Partition
from tests.workers.verification_helpers import eventually
from workers.runtime.consumer import Batch, BatchStopped, ConsumerSettings, PartitionConsumer

PARTITIONS = 4
CLAIM_IDLE = 1.0


def stream_of(partition: Partition) -> str:
    return f"gelombang:{partition.tag}:test-runtime"


class Recorder:
    """A role that records the entries it is handed and acknowledges them."""

    def __init__(self, work: Callable[[Batch], Awaitable[None]] | None = None) -> None:
        self.seen: Counter[bytes] = Counter()
        self.consumer: PartitionConsumer | None = None
        self._work = work

    async def handle(self, batch: Batch) -> None:
        for _, fields in batch.entries:
            self.seen[fields[b"n"]] += 1
        if self._work is not None:
            await self._work(batch)
        assert self.consumer is not None
        await self.consumer.acknowledge(batch, [entry_id for entry_id, _ in batch.entries])

    async def idle(self, partition: Partition) -> None:
        pass

    def heartbeat_fields(self) -> Mapping[str, str | int | float]:
        return {"seen": sum(self.seen.values())}


@contextlib.asynccontextmanager
async def consuming(redis: Redis, role: Recorder, name: str, *, slots: int = 4,
                    block_ms: int = 100) -> AsyncIterator[PartitionConsumer]:
    settings = ConsumerSettings(role="test", group="test", batch_size=10, block_ms=block_ms,
                                claim_idle_seconds=CLAIM_IDLE, slots=slots,
                                heartbeat_seconds=0.2, retry_max_seconds=0.2)
    consumer = PartitionConsumer(redis, settings, stream_of, role, PARTITIONS, name=name)
    role.consumer = consumer
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.stopping.set()
        await asyncio.wait_for(task, 10)


async def add(redis: Redis, count: int) -> None:
    for n in range(count):
        await redis.xadd(stream_of(Partition(n % PARTITIONS)), {"n": str(n)})


async def lengths(redis: Redis) -> int:
    return sum([await redis.xlen(stream_of(Partition(p))) for p in range(PARTITIONS)])


async def test_two_consumers_share_the_partitions_and_handle_every_entry_once(
        redis_client: Redis) -> None:
    first, second = Recorder(), Recorder()
    async with consuming(redis_client, first, "a") as a, \
            consuming(redis_client, second, "b") as b:
        # Each holds its fair share of the leases once both have beaten.
        await eventually(lambda: _true(len(a.leases.held) == len(b.leases.held) == 2),
                         what="the partitions shared")
        await add(redis_client, 200)
        await eventually(lambda: _handled(first, second, 200), what="every entry")
        await eventually(lambda: _empty(redis_client), what="acknowledged and trimmed")
    assert first.seen + second.seen == Counter({str(n).encode(): 1 for n in range(200)})
    assert first.seen and second.seen  # both took partitions (leases, fair shares)


async def test_a_batch_that_fails_unexpectedly_is_handled_again_after_the_idle_time(
        redis_client: Redis) -> None:
    failures = 0

    async def fail_once(batch: Batch) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise RuntimeError("a bug")

    role = Recorder(fail_once)
    async with consuming(redis_client, role, "a"):
        await add(redis_client, 1)
        started = time.monotonic()
        await eventually(lambda: _true(role.seen[b"0"] == 2), what="handled again")
        again_after = time.monotonic() - started
        await eventually(lambda: _empty(redis_client), what="acknowledged")
    assert again_after >= CLAIM_IDLE * 0.9  # reclaimed as idle, not at once


async def test_a_stopping_consumer_leaves_its_batch_to_the_next_at_once(
        redis_client: Redis) -> None:
    blocked = asyncio.Event()

    async def stop_midway(batch: Batch) -> None:
        blocked.set()
        raise BatchStopped  # as a role does when told to stop mid-batch

    stopper = Recorder(stop_midway)
    async with consuming(redis_client, stopper, "a"):
        await add(redis_client, 1)
        await asyncio.wait_for(blocked.wait(), 10)
    successor = Recorder()
    async with consuming(redis_client, successor, "b"):
        started = time.monotonic()
        await eventually(lambda: _true(successor.seen[b"0"] == 1), what="taken over")
        taken_after = time.monotonic() - started
    assert taken_after < CLAIM_IDLE  # released idle: no wait for claim_idle_seconds
    assert await lengths(redis_client) == 0


async def test_a_consumer_with_fewer_slots_than_partitions_stops_after_one_read(
        redis_client: Redis) -> None:
    # One slot, four partitions, reads blocking for a second: the loops take
    # turns. At a stop, only the read under way finishes; the loops still
    # waiting for the slot read no more (else the stop took a read each).
    role = Recorder()
    async with consuming(redis_client, role, "a", slots=1, block_ms=1000) as consumer:
        await eventually(lambda: _true(len(consumer.leases.held) == PARTITIONS),
                         what="every partition leased")
        started = time.monotonic()  # the block's end stops the consumer
    stopped_after = time.monotonic() - started
    assert stopped_after < 2.0  # one read at most (four took four seconds or more)


async def _handled(first: Recorder, second: Recorder, count: int) -> bool:
    return sum((first.seen + second.seen).values()) >= count


async def _empty(redis: Redis) -> bool:
    return await lengths(redis) == 0


async def _true(value: bool) -> bool:
    return value
