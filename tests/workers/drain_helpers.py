"""Running the drain in tests: enqueue like the door, drain, wait, inspect."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from config.settings import Settings
from queueing.envelope import STREAM_FIELD, Envelope
from queueing.intake_admission import partition_of
from queueing.keys import STORE_GROUP, partitions
from queueing.redis_client import RedisClient
from tests.support import stream_range
from workers.drain.handoff import JOB_FIELD, KINDS
from workers.drain.worker import DrainWorker
from workers.runtime.connections import connect_worker_redis, create_pool

# Quick enough for tests: short reads, fast reclaim, two tries before dead letters.
FAST_DRAIN: dict[str, Any] = {
    "block_ms": 100, "claim_idle_seconds": 1.0, "max_refusals": 2, "heartbeat_seconds": 0.5,
    "outbox_sweep_seconds": 1.0, "retry_max_seconds": 0.5, "batch_size": 100,
}


def drain_settings(settings: Settings, **changes: Any) -> Settings:
    """The test settings with the fast drain figures (and any given changes)."""
    return settings.model_copy(update={
        "drain": settings.drain.model_copy(update={**FAST_DRAIN, **changes})})


async def enqueue(redis: RedisClient, settings: Settings, envelopes: Sequence[Envelope]) -> None:
    """Append envelopes to their partitions' streams as the door's admission does."""
    count = settings.queue.partitions
    parts = partitions(count)
    async with redis.pipeline(transaction=False) as pipe:
        for envelope in envelopes:
            stream = parts[partition_of(envelope.nik_hash, None, count)].stream
            _ = pipe.xadd(stream, {STREAM_FIELD: envelope.encode()})
        await pipe.execute()


@contextlib.asynccontextmanager
async def running_drain(settings: Settings, name: str = "test-worker") -> AsyncIterator[
    DrainWorker
]:
    """A DrainWorker in this process until the block ends (then stopped gracefully)."""
    redis = connect_worker_redis(settings)
    pool = await create_pool(settings, settings.queue.partitions + 1)
    worker = DrainWorker(settings, redis, pool, name=name)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stopping.set()
        await asyncio.wait_for(task, 10)
        await pool.close()
        await redis.aclose()


async def backlog(redis: RedisClient, settings: Settings) -> tuple[int, int]:
    """Entries still in the intake streams, and entries pending with the group."""
    length = pending = 0
    for partition in partitions(settings.queue.partitions):
        length += await redis.xlen(partition.stream)
        with contextlib.suppress(Exception):
            info: Any = await redis.xpending(partition.stream, STORE_GROUP)
            pending += int(info["pending"])
    return length, pending


async def wait_drained(redis: RedisClient, settings: Settings, within: float = 30.0) -> None:
    """Until every stream is empty and nothing is pending."""
    deadline = time.monotonic() + within
    while await backlog(redis, settings) != (0, 0):
        if time.monotonic() > deadline:
            raise AssertionError(f"not drained in time: {await backlog(redis, settings)}")
        await asyncio.sleep(0.05)


async def wait_outbox_empty(dsn: str, within: float = 30.0) -> None:
    """Until the outbox holds no row: a row a crash or an outage left behind is
    relayed by a running worker's refill, every `outbox_sweep_seconds`."""
    connection = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + within
        while left := await connection.fetchval("SELECT count(*) FROM verification_handoffs"):
            if time.monotonic() > deadline:
                raise AssertionError(f"{left} outbox rows not relayed in time")
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


async def handed_off(redis: RedisClient, settings: Settings) -> dict[str, list[uuid.UUID]]:
    """Every verification job on the streams, by kind (repeats kept, to be counted)."""
    jobs: dict[str, list[uuid.UUID]] = {kind: [] for kind in KINDS}
    for partition in partitions(settings.queue.partitions):
        for kind in KINDS:
            for _, fields in await stream_range(redis, partition.verification(kind)):
                jobs[kind].append(uuid.UUID(bytes=fields[JOB_FIELD]))
    return jobs
