"""Crash safety of the drain: killed workers, a crash between commit and hand-off, and
PostgreSQL stopped or hung mid-drain. Every admitted registration is stored exactly once and
gets exactly one job of each kind."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from database.funnel import funnel_counts
from database.schema import migrate
from gelombang.devstate import render_toml
from gelombang.services import PostgresServer
from loadtest.registrants import RegistrantFactory
from queueing.envelope import Envelope
from queueing.intake_admission import partition_of
from queueing.keys import STORE_GROUP, Partition, partitions
from tests.support import REPO_ROOT, seal_people, stream_range
from tests.workers.drain_helpers import (
    drain_settings,
    enqueue,
    handed_off,
    running_drain,
    wait_drained,
    wait_outbox_empty,
)
from tests.workers.verification_helpers import eventually
from workers.drain.handoff import Handoff
from workers.drain.store import store_batch


def ids_of(envelopes: list[Envelope]) -> set[uuid.UUID]:
    return {uuid.UUID(bytes=envelope.registration_id) for envelope in envelopes}


async def assert_stored_once_with_one_job_each(
    pg: asyncpg.Connection, redis: Redis, settings: Settings, envelopes: list[Envelope]
) -> None:
    rows = await pg.fetch("SELECT registration_id, state::text FROM registrations")
    assert len(rows) == len(envelopes)
    assert {row[0] for row in rows} == ids_of(envelopes)
    accepted = sorted(row[0] for row in rows if row[1] == "accepted")
    jobs = await handed_off(redis, settings)
    for kind, found in jobs.items():
        assert sorted(found) == accepted, f"{kind} jobs are not one per accepted registration"
    assert await pg.fetchval("SELECT count(*) FROM verification_handoffs") == 0
    counts = await funnel_counts(pg)
    assert counts["stored"] == len(envelopes)
    assert counts["stored"] == sum(counts.get(s, 0) for s in ("accepted", "duplicate",
                                                                 "ineligible"))
    assert Counter(row[1] for row in rows) == {
        state: counts[state] for state in ("accepted", "duplicate", "ineligible")
        if counts.get(state)}


async def read_as_ghost(redis: Redis, settings: Settings) -> None:
    """A consumer takes every entry and dies without acknowledging any."""
    for index in range(settings.queue.partitions):
        await redis.xreadgroup(STORE_GROUP, "ghost", {Partition(index).stream: ">"})


async def test_a_crash_after_commit_before_hand_off_and_ack_completes_once(
    pg: asyncpg.Connection, redis_client: Redis, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    settings = drain_settings(test_settings)
    async with running_drain(settings):
        pass  # creates the consumer groups
    envelopes = seal_people(settings, [registrants.make() for _ in range(40)])
    envelopes.append(seal_people(settings, [registrants.same_nik_as(registrants.make())])[0])
    await enqueue(redis_client, settings, envelopes)
    await read_as_ghost(redis_client, settings)
    # The ghost committed its batches, then died: no hand-off, no XACK.
    count = settings.queue.partitions
    for index in range(count):
        mine = [e for e in envelopes if partition_of(e.nik_hash, None, count) == index]
        await store_batch(pg, index, 0, mine)

    async with running_drain(settings, name="heir"):
        await wait_drained(redis_client, settings, within=15)
        # The ghost's outbox rows are relayed by the heir's refill.
        await wait_outbox_empty(settings.postgres.dsn)

    await assert_stored_once_with_one_job_each(pg, redis_client, settings, envelopes)


async def test_a_crash_after_hand_off_before_the_outbox_delete_adds_no_job(
    pg: asyncpg.Connection, redis_client: Redis, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    settings = drain_settings(test_settings)
    envelopes = seal_people(settings, [registrants.make() for _ in range(10)])
    result = await store_batch(pg, 3, 0, envelopes)
    assert result.handoff is not None
    # The jobs reached Redis, but the outbox row's delete never ran.
    assert await Handoff(redis_client, 3600).hand_off([result.handoff]) == 20
    await pg.execute("UPDATE verification_handoffs SET created_at = now() - interval '1 hour'")

    async with running_drain(settings):
        for _ in range(100):  # the refill runs every outbox_sweep_seconds
            if not await pg.fetchval("SELECT count(*) FROM verification_handoffs"):
                break
            await asyncio.sleep(0.1)

    assert await pg.fetchval("SELECT count(*) FROM verification_handoffs") == 0
    jobs = await handed_off(redis_client, settings)
    assert sorted(jobs["email"]) == sorted(jobs["nik"]) == sorted(ids_of(envelopes))


# --- real processes ----------------------------------------------------------------------

def worker_config(settings: Settings, path: Path) -> Path:
    path.write_text(render_toml(settings.model_dump(mode="json")))
    return path


def start_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GELOMBANG_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gelombang", "worker", "store"],
                                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.slow
async def test_kill_9_mid_batch_then_restart_stores_everything_once(
    pg: asyncpg.Connection, redis_client: Redis, test_settings: Settings,
    registrants: RegistrantFactory, tmp_path: Path,
) -> None:
    settings = drain_settings(test_settings, batch_size=200)
    people = [registrants.make() for _ in range(6000)]
    people += [registrants.same_nik_as(person) for person in people[:300]]
    envelopes = seal_people(settings, people)
    config = worker_config(settings, tmp_path / "worker.toml")
    await enqueue(redis_client, settings, envelopes)

    first = start_worker(config, tmp_path / "worker.log")
    try:
        for _ in range(600):
            if await pg.fetchval("SELECT count(*) FROM registrations") > 1000:
                break
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        stored_at_kill = await pg.fetchval("SELECT count(*) FROM registrations")
        assert 0 < stored_at_kill < len(envelopes), "the kill should land mid-drain"
        second = start_worker(config, tmp_path / "worker.log")
        try:
            await wait_drained(redis_client, settings, within=120)
            # The killed batch's outbox row, if it committed, comes via the refill.
            await wait_outbox_empty(settings.postgres.dsn)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0
    finally:
        if first.poll() is None:
            first.kill()

    await assert_stored_once_with_one_job_each(pg, redis_client, settings, envelopes)
    log = (tmp_path / "worker.log").read_text()
    assert "drain worker" in log and "stopped" in log
    for person in people[:50]:
        assert person.nik not in log and person.email not in log


@pytest.mark.slow
async def test_postgres_stopped_and_restarted_mid_drain_loses_and_doubles_nothing(
    own_postgres: PostgresServer, redis_client: Redis, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    await migrate(own_postgres.dsn)
    settings = drain_settings(test_settings, batch_size=100)
    settings = settings.model_copy(update={
        "postgres": settings.postgres.model_copy(update={"dsn": own_postgres.dsn})})
    envelopes = seal_people(settings, [registrants.make() for _ in range(3000)])
    await enqueue(redis_client, settings, envelopes[:1500])
    connection = await asyncpg.connect(own_postgres.dsn)
    async with running_drain(settings):
        for _ in range(500):
            if await connection.fetchval("SELECT count(*) FROM registrations") > 300:
                break
            await asyncio.sleep(0.01)
        await connection.close()
        await asyncio.to_thread(own_postgres.stop, "fast")
        await enqueue(redis_client, settings, envelopes[1500:])
        await asyncio.sleep(1.5)  # batches fail and are retried meanwhile
        await asyncio.to_thread(own_postgres.start)
        started = time.monotonic()
        await wait_drained(redis_client, settings, within=60)
        recovery = time.monotonic() - started
        # A hand-off cut off by the outage leaves its row to the refill.
        await wait_outbox_empty(settings.postgres.dsn)
    connection = await asyncpg.connect(own_postgres.dsn)
    try:
        await assert_stored_once_with_one_job_each(connection, redis_client, settings,
                                                   envelopes)
    finally:
        await connection.close()
    assert recovery < 30


async def held_by(redis: Redis, settings: Settings, pid: int) -> bool:
    """Whether every partition's lease is held by the worker process `pid` (its consumer
    name is `<host>-<pid>-<random>`)."""
    for partition in partitions(settings.queue.partitions):
        holder = await redis.get(partition.drain_lease)
        if not isinstance(holder, bytes) or f"-{pid}-".encode() not in holder:
            return False
    return True


@pytest.mark.slow
async def test_postgres_hung_past_the_lease_while_workers_restart_six_times_dead_letters_none(
    own_postgres: PostgresServer, redis_client: Redis, test_settings: Settings,
    registrants: RegistrantFactory, tmp_path: Path,
) -> None:
    await migrate(own_postgres.dsn)
    # Leases of 1 s; two refusals make a dead letter: six takeovers must make none.
    settings = drain_settings(test_settings, batch_size=50, max_refusals=2)
    settings = settings.model_copy(update={
        "postgres": settings.postgres.model_copy(update={"dsn": own_postgres.dsn})})
    envelopes = seal_people(settings, [registrants.make() for _ in range(800)])
    config = worker_config(settings, tmp_path / "worker.toml")
    log = tmp_path / "worker.log"
    await enqueue(redis_client, settings, envelopes[:400])
    connection = await asyncpg.connect(own_postgres.dsn)
    worker = start_worker(config, log)
    workers = [worker]
    try:
        for _ in range(1000):
            if await connection.fetchval("SELECT count(*) FROM registrations") > 50:
                break
            await asyncio.sleep(0.02)
        await connection.close()
        # Hung, not down: the postmaster and every backend stopped, connections open.
        os.killpg(own_postgres.pid, signal.SIGSTOP)
        hung_at = time.monotonic()
        try:
            await enqueue(redis_client, settings, envelopes[400:])
            for _ in range(6):
                # Each worker takes every partition over (reclaiming what its
                # predecessor had in hand), its store hangs, and it is killed.
                await eventually(functools.partial(held_by, redis_client, settings, worker.pid),
                                 30, "the new worker holds every lease")
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                worker = start_worker(config, log)
                workers.append(worker)
            await eventually(functools.partial(held_by, redis_client, settings, worker.pid),
                             30, "the last worker holds every lease")
            assert time.monotonic() - hung_at > 6 * settings.drain.claim_idle_seconds
        finally:
            os.killpg(own_postgres.pid, signal.SIGCONT)
        await wait_drained(redis_client, settings, within=90)
        await wait_outbox_empty(settings.postgres.dsn, within=60)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait(10)

    connection = await asyncpg.connect(own_postgres.dsn)
    try:
        await assert_stored_once_with_one_job_each(connection, redis_client, settings, envelopes)
        assert await connection.fetchval("SELECT count(*) FROM dead_letters") == 0
    finally:
        await connection.close()
    for partition in partitions(settings.queue.partitions):
        assert await stream_range(redis_client, partition.dead_letters) == []
