"""NIK verification against the real HTTP simulator, with real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from config.settings import Settings
from gelombang.processes import free_ports
from loadtest.registrants import Registrant, RegistrantFactory
from queueing import breaker_reports
from queueing.keys import Partition
from queueing.sealing import KeyedHasher
from tests.intake.door_helpers import DoorUnderTest
from tests.support import REPO_ROOT, write_config
from tests.workers.drain_helpers import drain_settings, running_drain
from tests.workers.test_email import funnel, register
from tests.workers.verification_backlog import stored_backlog
from tests.workers.verification_helpers import (
    dead_jobs,
    email_settings,
    eventually,
    mail_sink,
    nik_settings,
    nik_simulator,
    running_email_worker,
    running_nik_worker,
    states,
)
from workers.blacklist import import_source
from workers.drain.handoff import JOB_FIELD


def people(factory: RegistrantFactory, settings: Settings, count: int, **kind: bool
           ) -> list[Registrant]:
    sim = settings.nik_sim
    return [factory.citizen(sim.population_seed, sim.existing_share, **kind)
            for _ in range(count)]


async def all_checked(pg: asyncpg.Connection, count: int) -> bool:
    values = list((await states(pg, "nik_verification")).values())
    return len(values) == count and "pending" not in values


async def test_the_ministrys_answers_become_the_nik_states(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        registrants: RegistrantFactory) -> None:
    matching = people(registrants, test_settings, 2)
    unknown = people(registrants, test_settings, 1, exists=False)
    drifted = people(registrants, test_settings, 1, drifted=True)
    renamed = [p.__class__(p.nik, "Nama Lain Sekali", p.email, p.phone, p.birth_date)
               for p in people(registrants, test_settings, 1)]
    ids = await register(door_under_test, matching + unknown + drifted + renamed)
    async with nik_simulator(test_settings) as sim:
        settings = nik_settings(drain_settings(test_settings), sim.url)
        async with running_drain(settings), running_nik_worker(settings):
            await eventually(lambda: all_checked(pg, 5), what="all five checked")
        stats = await sim.stats()
    table = await states(pg, "nik_verification")
    assert [table[rid] for rid in ids] == [
        "verified", "verified", "not_found", "mismatch", "mismatch"]
    assert stats["results"] == {"match": 2, "not_found": 1, "birth_date_mismatch": 1,
                                "name_mismatch": 1}
    assert stats["received"] == 5  # one call each, nothing repeated
    counts = await funnel(door_under_test)
    assert (counts["nik_verified"], counts["nik_rejected"]) == (2, 3)
    assert await pg.fetchval("SELECT count(*) FROM nik_checks") == 5
    async with door_under_test.public.get(f"/v1/registrations/{ids[0]}") as reply:
        assert (await reply.json())["nik_verification"] == "verified"


async def test_a_cached_answer_is_not_asked_again(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        redis_client: Redis, registrants: RegistrantFactory) -> None:
    [person] = people(registrants, test_settings, 1)
    nik_hash = KeyedHasher(test_settings.keys.hash_key_bytes()).digest(person.nik)
    await pg.execute("INSERT INTO nik_checks (nik_hash, outcome) VALUES ($1, 'not_found')",
                     nik_hash)
    [rid] = await register(door_under_test, [person])
    async with nik_simulator(test_settings) as sim:
        settings = nik_settings(drain_settings(test_settings), sim.url)
        async with running_drain(settings), running_nik_worker(settings) as verifier:
            await eventually(lambda: all_checked(pg, 1), what="checked")
            assert verifier.cache_hits == 1
            # A redelivered job finds the state set and calls nobody either.
            await redis_client.xadd(Partition(0).verification("nik"), {JOB_FIELD: rid.bytes})
            await asyncio.sleep(0.5)
        assert (await sim.stats())["received"] == 0
    assert (await states(pg, "nik_verification"))[rid] == "not_found"
    assert (await funnel(door_under_test))["nik_rejected"] == 1


async def test_an_outage_opens_the_breaker_and_every_job_completes_after(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        redis_client: Redis, registrants: RegistrantFactory) -> None:
    count = 20
    ids = await register(door_under_test,
                         people(registrants, test_settings, count))
    async with nik_simulator(test_settings) as sim:
        await sim.outage(True)
        settings = nik_settings(drain_settings(test_settings), sim.url)
        async with running_drain(settings), running_nik_worker(settings) as verifier:
            await eventually(lambda: _opened(verifier.breaker.times_opened), what="breaker open")
            # Operators see it: the worker reports its breaker, the door exports it.
            await eventually(lambda: _reported_open(redis_client), what="breaker reported")
            await asyncio.sleep(0.5)
            before = (await sim.stats())["received"]
            await asyncio.sleep(3.0)
            during = (await sim.stats())["received"] - before
            # Open for 0.5 s at a time: about one probe per 0.5 s reaches the API,
            # where 8 jobs in hand retrying every 0.05-0.2 s would make 60 or more.
            assert during <= 3.0 / 0.5 + 2
            assert not await all_checked(pg, count)
            await sim.outage(False)
            await eventually(lambda: all_checked(pg, count), what="all checked after")
        stats = await sim.stats()
    assert await breaker_reports.current_reports(redis_client) == []  # withdrawn at the stop
    table = await states(pg, "nik_verification")
    assert {table[rid] for rid in ids} == {"verified"}
    assert stats["results"] == {"match": count}  # each NIK answered once: none doubled
    assert (await funnel(door_under_test))["nik_verified"] == count
    assert not await dead_jobs(redis_client, test_settings)


async def _opened(times: int) -> bool:
    return times > 0


async def _reported_open(redis: Redis) -> bool:
    return [r.is_open for r in await breaker_reports.current_reports(redis)] == [True]


async def test_a_refused_request_marks_the_check_failed_without_retries(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        redis_client: Redis, registrants: RegistrantFactory) -> None:
    [rid] = await register(door_under_test,
                           people(registrants, test_settings, 1))
    async with nik_simulator(test_settings) as sim:
        settings = nik_settings(drain_settings(test_settings), sim.url, password="wrong")
        async with running_drain(settings), running_nik_worker(settings):
            await eventually(lambda: all_checked(pg, 1), what="checked")
        assert (await sim.stats())["statuses"] == {"401": 1}
    assert (await states(pg, "nik_verification"))[rid] == "failed"
    assert await pg.fetchval("SELECT count(*) FROM nik_checks") == 0  # never cached
    [dead] = await dead_jobs(redis_client, test_settings)
    assert dead[b"r"] == rid.bytes


async def test_server_errors_are_retried_until_answered(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        registrants: RegistrantFactory) -> None:
    ids = await register(door_under_test,
                         people(registrants, test_settings, 10))
    async with nik_simulator(test_settings) as sim:
        await sim.configure(error_rate=0.5)
        settings = nik_settings(drain_settings(test_settings), sim.url, breaker_failures=50)
        async with running_drain(settings), running_nik_worker(settings):
            await eventually(lambda: all_checked(pg, 10), what="all checked")
        stats = await sim.stats()
    assert {(await states(pg, "nik_verification"))[rid] for rid in ids} == {"verified"}
    assert stats["statuses"].get("500", 0) > 0
    assert stats["results"] == {"match": 10}


@contextmanager
def nik_worker_processes(settings: Settings, folder: Path, count: int) -> Iterator[
        list[subprocess.Popen[bytes]]]:
    """`gelombang worker nik` in `count` processes, stopped with SIGTERM at the end."""
    config = folder / "nik.toml"
    write_config(settings, config, 0, 0)
    env = {**os.environ, "GELOMBANG_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    processes = []
    for index in range(count):
        with (folder / f"nik-{index}.log").open("wb") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "gelombang", "worker", "nik"], cwd=REPO_ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT))
    try:
        yield processes
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_two_worker_processes_stay_under_the_shared_rate(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        registrants: RegistrantFactory, tmp_path: Path) -> None:
    rate, count = 10, 45
    await register(door_under_test, people(registrants, test_settings, count))
    async with nik_simulator(test_settings) as sim:
        # Generous timeout and claim idle time: on a slow 2-core CI the
        # simulator shares this test's event loop, and a timed-out call or a
        # reclaimed job would be a legitimate second call, not a rate breach.
        settings = nik_settings(drain_settings(test_settings), sim.url,
                                rate_per_second=float(rate), burst=1, concurrency=8,
                                timeout_seconds=15.0, claim_idle_seconds=15.0)
        # Each process serves its metrics on the first free port of the NIK range.
        first_port = free_ports(2)
        settings = settings.model_copy(update={"worker_metrics": settings.worker_metrics.
                                               model_copy(update={"enabled": True,
                                                                  "nik_port": first_port,
                                                                  "ports_per_role": 2})})
        async with running_drain(settings):
            with nik_worker_processes(settings, tmp_path, 2) as workers:
                started = time.monotonic()
                await eventually(lambda: all_checked(pg, count), within=60, what="all checked")
                elapsed = time.monotonic() - started
                assert all(w.poll() is None for w in workers)
                # Counted right after each batch's statement commits: a moment after.
                ports = (first_port, first_port + 1)
                await eventually(lambda: _all_counted(sim.session, ports, count),
                                 what="metrics of both processes")
            assert [w.returncode for w in workers] == [0, 0]  # SIGTERM: a clean stop
        stats: dict[str, Any] = await sim.stats()
    # The bucket lets at most burst + rate·t calls start in any t seconds:
    # rate + 1 in a calendar second, +1 for a call's network time moving it
    # across a second's edge (docs/verification.md).
    assert stats["max_per_second"] <= rate + 2
    assert stats["received"] == count
    assert elapsed >= (count - 1) / rate - 1  # the limit did slow them down
    logs = await asyncio.to_thread(_read_logs, tmp_path)
    assert "NIK worker" in logs and "Traceback" not in logs


async def _all_counted(session: aiohttp.ClientSession, ports: tuple[int, ...],
                       count: int) -> bool:
    """Whether both processes' metrics, over HTTP, add up to the table."""
    return sum([await _verified_counter(session, port) for port in ports]) == count


async def _verified_counter(session: aiohttp.ClientSession, port: int) -> float:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    line = 'gelombang_worker_jobs_total{outcome="verified",role="nik"} '
    [value] = [row[len(line):] for row in text.splitlines() if row.startswith(line)]
    return float(value)


def _read_logs(folder: Path) -> str:
    return "".join(path.read_text() for path in sorted(folder.glob("nik-*.log")))


async def test_duplicates_and_ineligible_are_never_sent_even_with_a_job(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        redis_client: Redis, registrants: RegistrantFactory, tmp_path: Path) -> None:
    first, banned = people(registrants, test_settings, 2)
    await import_source(pg, await asyncio.to_thread(_csv, tmp_path, banned.nik), "bumn",
                        KeyedHasher(test_settings.keys.hash_key_bytes()))
    again = registrants.same_nik_as(first)
    ids = await register(door_under_test, [first, banned, again])
    async with nik_simulator(test_settings) as sim, mail_sink(tmp_path / "mail") as (sink, port):
        settings = email_settings(nik_settings(drain_settings(test_settings), sim.url), port)
        async with running_drain(settings), running_nik_worker(settings) as verifier, \
                running_email_worker(settings) as mailer:
            await eventually(lambda: all_checked(pg, 3), what="first one checked")
            await eventually(lambda: _sent(mailer.verifier.sent, 1), what="first one mailed")
            # Jobs for the other two, as a bug or an operator's replay might add them.
            for rid in ids[1:]:
                for kind in ("nik", "email"):
                    await redis_client.xadd(Partition(0).verification(kind),
                                            {JOB_FIELD: rid.bytes})
            await asyncio.sleep(1.0)
            assert verifier.calls_made == 1
        assert (await sim.stats())["received"] == 1
        assert sink.received == 1
    rows = {row[0]: tuple(row[1:]) for row in await pg.fetch(
        "SELECT registration_id, state::text, email_verification::text, "
        "nik_verification::text FROM registrations")}
    assert [rows[rid] for rid in ids] == [("accepted", "sent", "verified"),
                                          ("ineligible", "skipped", "skipped"),
                                          ("duplicate", "skipped", "skipped")]


async def _sent(count: int, wanted: int) -> bool:
    return count >= wanted


def _csv(folder: Path, nik: str) -> Path:
    path = folder / "list.csv"
    path.write_text(f"nik\n{nik}\n")
    return path


async def test_a_worker_keeps_its_few_postgresql_connections_with_500_calls_in_flight(
        pg: asyncpg.Connection, redis_client: Redis, test_settings: Settings,
        registrants: RegistrantFactory) -> None:
    count = 1500
    await stored_backlog(pg, redis_client, test_settings, registrants, count)
    async with nik_simulator(test_settings) as sim:
        # A slow ministry with room: calls pile up in flight, 500 at most.
        await sim.configure(latency_ms_median=800.0, latency_ms_p99=1200.0,
                            capacity_per_second=10_000.0)
        settings = nik_settings(test_settings, sim.url, concurrency=500,
                                rate_per_second=10_000.0, burst=1000, batches_in_hand=10,
                                timeout_seconds=20.0, claim_idle_seconds=30.0)
        most = 0
        async with running_nik_worker(settings):
            deadline = time.monotonic() + 60
            while not await all_checked(pg, count) and time.monotonic() < deadline:
                most = max(most, await pg.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = 'gelombang-nik'"))
                await asyncio.sleep(0.05)
        stats = await sim.stats()
    assert await all_checked(pg, count)
    assert stats["max_in_flight"] >= 450  # the calls really were in flight together
    assert 1 <= most <= settings.nik.pg_connections
