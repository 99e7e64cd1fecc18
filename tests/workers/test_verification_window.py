"""Redis holds a bounded window of the verification backlog; the rest waits in PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from queueing.keys import partitions
from tests.support import seal_people
from tests.workers.drain_helpers import drain_settings, enqueue, running_drain, wait_drained
from tests.workers.test_nik import all_checked, people
from tests.workers.verification_helpers import (
    email_settings,
    eventually,
    mail_sink,
    nik_settings,
    nik_simulator,
    received_mail,
    running_email_worker,
    running_nik_worker,
    states,
)
from workers.drain.handoff import KINDS

COUNT = 2000
WINDOW = 100


async def stream_lengths(redis: Redis, settings: Settings, kind: str) -> list[int]:
    return [await redis.xlen(p.verification(kind))
            for p in partitions(settings.queue.partitions)]


async def waiting_in_outbox(pg: asyncpg.Connection, kind: str) -> int:
    assert kind in KINDS
    count: int = await pg.fetchval(
        "SELECT coalesce(sum(cardinality(registration_ids)), 0) FROM verification_handoffs"
        f" WHERE NOT {kind}_relayed")
    return count


async def test_the_streams_hold_a_window_and_every_job_still_completes_once(
        pg: asyncpg.Connection, redis_client: Redis, test_settings: Settings,
        registrants: RegistrantFactory, tmp_path: Path) -> None:
    settings = drain_settings(test_settings, verification_window=WINDOW)
    envelopes = seal_people(settings, people(registrants, settings, COUNT))
    await enqueue(redis_client, settings, envelopes)
    async with running_drain(settings):
        await wait_drained(redis_client, settings, within=60)
    # Stored, nobody verifying: each stream stopped at its window (passed by
    # one hand-off row at most); the rest waits in the outbox.
    row_most = settings.drain.batch_size
    for kind in KINDS:
        lengths = await stream_lengths(redis_client, settings, kind)
        assert max(lengths) <= WINDOW + row_most
        assert sum(lengths) < COUNT // 2
        assert sum(lengths) + await waiting_in_outbox(pg, kind) == COUNT

    async with nik_simulator(settings) as sim, mail_sink(tmp_path) as (sink, port):
        verifying = email_settings(nik_settings(settings, sim.url), port)
        async with running_drain(verifying), running_email_worker(verifying), \
                running_nik_worker(verifying):
            await eventually(lambda: all_checked(pg, COUNT), within=90, what="all NIKs checked")
            await eventually(lambda: _all_sent(pg), within=60, what="all emails sent")
        stats = await sim.stats()
        assert sink.received == COUNT
    assert stats["received"] == COUNT  # each NIK asked once
    mailed = [mail.registration_id for mail in received_mail(tmp_path)]
    assert sorted(mailed) == sorted(uuid.UUID(bytes=e.registration_id) for e in envelopes)
    assert await pg.fetchval("SELECT count(*) FROM verification_handoffs") == 0


async def _all_sent(pg: asyncpg.Connection) -> bool:
    values = set((await states(pg, "email_verification")).values())
    return values == {"sent"}
