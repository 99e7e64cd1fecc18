"""The verification job consumer: each job handled once, failures retried, then dead."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from queueing.keys import Partition
from tests.support import seal_people, stream_range
from tests.workers.drain_helpers import drain_settings, enqueue, running_drain, wait_drained
from workers.handoff import JOB_FIELD
from workers.jobs import Handler, JobConsumer, JobSettings, VerificationJob

FAST = JobSettings(concurrency=4, claim_idle_seconds=0.5, max_deliveries=2)


@contextlib.asynccontextmanager
async def consuming(redis: Redis, settings: Settings, handler: Handler,
                    job_settings: JobSettings = FAST) -> AsyncIterator[JobConsumer]:
    consumer = JobConsumer(redis, "email", handler, job_settings, settings.queue.partitions,
                           name="test-jobs")
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.stopping.set()
        await asyncio.wait_for(task, 10)


async def queued_jobs(redis: Redis, settings: Settings) -> int:
    return sum([await redis.xlen(Partition(p).verification("email"))
                for p in range(settings.queue.partitions)])


async def test_every_job_is_handled_once(
    redis_client: Redis, pg: object, test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    settings = drain_settings(test_settings)
    envelopes = seal_people(settings, [registrants.make() for _ in range(25)])
    await enqueue(redis_client, settings, envelopes)
    async with running_drain(settings):
        await wait_drained(redis_client, settings)
    seen: list[uuid.UUID] = []

    async def handle(job: VerificationJob) -> None:
        await asyncio.sleep(0.01)
        seen.append(job.registration_id)

    async with consuming(redis_client, settings, handle):
        for _ in range(200):
            if await queued_jobs(redis_client, settings) == 0 and len(seen) >= 25:
                break
            await asyncio.sleep(0.05)

    assert Counter(seen) == Counter({uuid.UUID(bytes=e.registration_id): 1 for e in envelopes})
    assert await queued_jobs(redis_client, settings) == 0


async def test_a_failing_job_is_retried_then_dead_lettered(
    redis_client: Redis, test_settings: Settings,
) -> None:
    stream = Partition(0).verification("email")
    await redis_client.xadd(stream, {JOB_FIELD: uuid.uuid4().bytes})
    await redis_client.xadd(stream, {b"junk": b"1"})
    attempts = 0

    async def fail(job: VerificationJob) -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("the handler failed")

    async with consuming(redis_client, test_settings, fail):
        for _ in range(100):
            if len(await stream_range(redis_client, Partition(0).dead_letters)) == 2:
                break
            await asyncio.sleep(0.05)

    reasons = sorted(fields[b"reason"] for _, fields in
                     await stream_range(redis_client, Partition(0).dead_letters))
    assert reasons == [b"delivered 2 times without finishing", b"malformed job"]
    assert attempts == FAST.max_deliveries
    assert await redis_client.xlen(stream) == 0


async def test_a_job_in_hand_is_not_reclaimed_by_its_own_worker(
    redis_client: Redis, test_settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The keeper is stopped, as if a loaded machine left it behind: the job in
    # hand looks idle to XPENDING, yet this worker must not start it again.
    async def keeper_behind(self: JobConsumer) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(JobConsumer, "_keep_fresh", keeper_behind)
    stream = Partition(0).verification("email")
    await redis_client.xadd(stream, {JOB_FIELD: uuid.uuid4().bytes})
    runs = 0

    async def slow(job: VerificationJob) -> None:
        nonlocal runs
        runs += 1
        # Long enough for several reclaim rounds (one per blocking read, 1 s).
        await asyncio.sleep(FAST.claim_idle_seconds * 8)

    async with consuming(redis_client, test_settings, slow):
        for _ in range(200):
            if await redis_client.xlen(stream) == 0:
                break
            await asyncio.sleep(0.05)

    assert runs == 1
    assert await redis_client.xlen(stream) == 0


async def test_jobs_with_the_same_entry_id_in_two_partitions_are_each_run_once(
    redis_client: Redis, test_settings: Settings,
) -> None:
    # Entry ids are unique per stream only: jobs handed off to two partitions
    # in one millisecond share theirs. The quick one finishing must not make
    # the slow one look abandoned.
    quick, slow = uuid.uuid4(), uuid.uuid4()
    for partition, rid in ((0, quick), (1, slow)):
        await redis_client.xadd(Partition(partition).verification("email"),
                                {JOB_FIELD: rid.bytes}, id="5-0")
    runs: Counter[uuid.UUID] = Counter()

    async def handle(job: VerificationJob) -> None:
        runs[job.registration_id] += 1
        if job.registration_id == slow:
            # Long enough for several reclaim rounds (one per blocking read, 1 s).
            await asyncio.sleep(FAST.claim_idle_seconds * 8)

    async with consuming(redis_client, test_settings, handle):
        for _ in range(200):
            if await queued_jobs(redis_client, test_settings) == 0:
                break
            await asyncio.sleep(0.05)

    assert runs == Counter({quick: 1, slow: 1})
