"""The priority lane: a registrant who waits is served before a verification backlog."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from queueing.keys import Partition, partition_for_registration
from tests.intake.door_helpers import DoorUnderTest
from tests.workers.verification_backlog import stored_backlog
from tests.workers.verification_helpers import (
    email_settings,
    eventually,
    mail_sink,
    received_mail,
    running_email_worker,
    states,
)
from workers.drain.handoff import JOB_FIELD
from workers.runtime.consumer import Batch, PartitionConsumer, StreamEntry
from workers.verification.email import EmailVerifier
from workers.verification.jobs import Job
from workers.verification.roles import running_role

BACKLOG = 20_000
# The relay's limit: the backlog lasts far longer than the test waits.
RATE = 200.0


async def test_a_registrant_polling_the_status_gets_the_email_within_seconds_behind_a_backlog(
        door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: Redis,
        test_settings: Settings, registrants: RegistrantFactory, tmp_path: Path) -> None:
    envelopes = await stored_backlog(pg, redis_client, test_settings, registrants, BACKLOG + 1)
    # The last one has its backlog job at the very end of its stream too.
    waiting = envelopes[-1]
    rid = uuid.UUID(bytes=waiting.registration_id)
    async with mail_sink(tmp_path) as (sink, port):
        settings = email_settings(test_settings, port, rate_per_second=RATE)
        async with running_email_worker(settings) as worker:
            await eventually(lambda: _sent_some(worker.verifier.sent), what="backlog going")
            # The registrant looks at the status page: the door puts the
            # registration in the priority lane (intake/registrations.py).
            asked = time.monotonic()
            async with door_under_test.public.get(f"/v1/registrations/{rid}") as reply:
                assert reply.status == 200
                assert (await reply.json())["email_verification"] == "pending"
            await eventually(lambda: _state_is_sent(pg, rid), within=5.0,
                             what="the waiting registrant's email")
            waited = time.monotonic() - asked
            sent_meanwhile = worker.verifier.sent
        backlog_left = BACKLOG - sink.received
    assert waited < 5.0
    assert backlog_left > BACKLOG // 2  # the backlog was far from done: it was jumped
    assert rid in {mail.registration_id for mail in received_mail(tmp_path)
                   if mail.registration_id == rid}
    assert sent_meanwhile < BACKLOG


async def _sent_some(sent: int) -> bool:
    return sent > 0


async def _state_is_sent(pg: asyncpg.Connection, rid: uuid.UUID) -> bool:
    row = await pg.fetchval(
        "SELECT email_verification::text FROM registrations WHERE registration_id = $1", rid)
    return bool(row == "sent")


async def test_the_backlog_job_of_a_registration_sent_from_the_lane_sends_nothing_more(
        pg: asyncpg.Connection, redis_client: Redis, test_settings: Settings,
        registrants: RegistrantFactory, tmp_path: Path) -> None:
    envelopes = await stored_backlog(pg, redis_client, test_settings, registrants, 3)
    lane_ids = [e.registration_id for e in envelopes]
    async with mail_sink(tmp_path) as (sink, port):
        settings = email_settings(test_settings, port)
        for rid in lane_ids:  # each also has its backlog job
            lane = Partition(partition_for_registration(rid, settings.queue.partitions))
            await redis_client.xadd(lane.verification_priority("email"), {JOB_FIELD: rid})
        async with running_email_worker(settings) as worker:
            await eventually(lambda: _jobs_done(worker.verifier.counts, 6), what="six jobs")
        assert sink.received == 3
    assert set((await states(pg, "email_verification")).values()) == {"sent"}


async def test_a_lane_batch_slow_to_load_sends_nothing_the_other_lane_sent_meanwhile(
        pg: asyncpg.Connection, redis_client: Redis, test_settings: Settings,
        registrants: RegistrantFactory, tmp_path: Path) -> None:
    # The race behind a doubled message: the priority batch loads the row
    # (pending), PostgreSQL is slow to answer it, and meanwhile the backlog
    # batch sends and records. The priority batch must not send once more.
    [envelope] = await stored_backlog(pg, redis_client, test_settings, registrants, 1)
    rid = envelope.registration_id
    async with mail_sink(tmp_path) as (sink, port):
        settings = email_settings(test_settings, port)
        lane = Partition(partition_for_registration(rid, settings.queue.partitions))
        await redis_client.xadd(lane.verification_priority("email"), {JOB_FIELD: rid})
        async with running_role(settings, "email") as running:
            [backlog] = await _read_batches(redis_client, running.consumer)
            [priority] = await _read_batches(redis_client, running.priority)
            verifier = running.verifier
            assert isinstance(verifier, EmailVerifier)
            loaded, backlog_done = asyncio.Event(), asyncio.Event()
            load = verifier.load

            async def slow_first_load(query: str, jobs: Sequence[Job]
                                      ) -> dict[bytes, asyncpg.Record]:
                rows = await load(query, jobs)
                if not loaded.is_set():
                    loaded.set()
                    await backlog_done.wait()
                return rows

            verifier.load = slow_first_load  # type: ignore[method-assign]
            slow = asyncio.create_task(verifier.handle(priority))
            await asyncio.wait_for(loaded.wait(), 10)
            await verifier.handle(backlog)
            backlog_done.set()
            await asyncio.wait_for(slow, 10)
            assert verifier.counts.get("jobs") == 2
            assert not verifier.in_flight  # every claim given back
        assert sink.received == 1
    assert set((await states(pg, "email_verification")).values()) == {"sent"}


async def _read_batches(redis: Redis, consumer: PartitionConsumer) -> list[Batch]:
    """Every job of the consumer's streams, read into one batch per partition."""
    batches = []
    for partition in consumer.partitions:
        stream = consumer.stream_of(partition)
        group = consumer.settings.group
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
        read: list[tuple[bytes, list[StreamEntry]]] = await redis.xreadgroup(
            group, "test", {stream: ">"})  # type: ignore[assignment]
        for _, entries in read:
            batches.append(Batch(partition, stream, "test", entries, reclaimed=False,
                                 owner=consumer))
    return batches


async def _jobs_done(counts: dict[str, int], wanted: int) -> bool:
    return counts.get("jobs", 0) >= wanted
