"""Door processes as production runs them: two processes, one global bucket."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from intake.metrics import FLUSH_SECONDS
from queueing.redis_client import RedisClient
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.door_helpers import with_admission
from tests.pii import redis_full_dump
from tests.support import door_processes, leaked_kinds, queued_ids, run_load

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
ADMITTED_SERIES = 'gelombang_admission_decisions_total{outcome="admitted"}'
CREATED_202_SERIES = ('gelombang_http_request_duration_seconds_count'
                      '{route="registrations.create",status="202"}')


async def put_admission(admin_url: str, changes: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.put(
        admin_url + "/admin/v1/admission", data=orjson.dumps(changes),
        headers={**AUTH, "Content-Type": "application/json"},
    ) as response:
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result


async def scrape(admin_url: str) -> dict[str, float]:
    """The admin port's /metrics as {series with labels: value}."""
    async with aiohttp.ClientSession() as session, session.get(admin_url + "/metrics") as reply:
        text = await reply.text()
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


async def scrape_flushed(admin_url: str, expected: dict[str, float]) -> dict[str, float]:
    """A scrape once both processes flushed their counts (every series in `expected`
    has its value, or 3 flush periods passed): the one that answers flushes first, the
    other every FLUSH_SECONDS (intake/metrics.py). Every series the test reads must be
    waited for: a sibling's admissions can be flushed a period before its last 429s."""
    deadline = time.monotonic() + 3 * FLUSH_SECONDS
    while True:
        series = await scrape(admin_url)
        if (all(series.get(name) == value for name, value in expected.items())
                or time.monotonic() > deadline):
            return series
        await asyncio.sleep(FLUSH_SECONDS / 4)


@pytest.mark.both_redis
async def test_two_processes_admit_burst_plus_rate_in_total_and_lose_nothing(
    test_settings: Settings, redis_client: RedisClient, tmp_path: Path,
) -> None:
    rate, burst = 100.0, 200
    settings = with_admission(test_settings, rate_per_second=rate, burst=burst)
    with door_processes(settings, tmp_path, processes=2) as doors:
        started = time.monotonic()
        result = await run_load(doors.url, concurrency=32, duration=3.0)
        elapsed = time.monotonic() - started
        admitted = result.statuses[202]
        limited = 'gelombang_admission_decisions_total{outcome="limited"}'
        metrics = await scrape_flushed(doors.admin_url, {
            ADMITTED_SERIES: admitted, CREATED_202_SERIES: admitted,
            limited: result.statuses[429]})
        log = doors.log_text()
    # /metrics adds up both processes (prometheus multiprocess mode).
    assert metrics[ADMITTED_SERIES] == admitted
    assert metrics[limited] == result.statuses[429]
    assert metrics[CREATED_202_SERIES] == admitted
    parts = settings.queue.partitions
    # Upper bound (docs/admission.md): burst + rate * t, plus under one token
    # per partition from rounding. Lower bound: each partition saturated,
    # less the refill of the last round trip.
    assert admitted <= burst + rate * elapsed + parts
    assert admitted >= burst + rate * (elapsed - 0.5) - parts
    assert result.statuses[429] > admitted  # the bucket really was the limit
    assert set(result.statuses) <= {202, 429}
    assert result.connection_errors == 0
    # No loss, no doubles: every 202 has exactly one entry, and nothing else is queued.
    queued = await queued_ids(redis_client, parts)
    assert len(queued) == len(set(queued)) == admitted
    assert set(queued) == set(result.accepted_ids)
    # No plaintext personal data in Redis or in the door's log.
    # By kind ("name (4 bytes)": 2), never the values.
    assert leaked_kinds(await redis_full_dump(redis_client), result.sent) == {}
    assert leaked_kinds(log.encode(), result.sent) == {}


@pytest.mark.both_redis
async def test_live_change_reaches_both_processes_within_two_seconds(
    test_settings: Settings, redis_client: RedisClient, tmp_path: Path,
) -> None:
    settings = with_admission(test_settings, rate_per_second=10_000.0, burst=10_000)
    with door_processes(settings, tmp_path, processes=2) as doors:
        before = await run_load(doors.url, concurrency=8, duration=0.5, fresh_connections=True)
        assert set(before.statuses) == {202}
        await put_admission(doors.admin_url, {"open": False})
        await asyncio.sleep(2.0)
        # Fresh connections spread over both processes (SO_REUSEPORT hashing).
        closed = await run_load(doors.url, concurrency=8, duration=0.5, fresh_connections=True)
        assert closed.statuses[503] > 20
        assert set(closed.codes) == {"intake_closed"}
        # Now a tight limit: what both processes admit together follows it.
        rate, burst = 20.0, 16
        await put_admission(doors.admin_url, {"open": True, "rate_per_second": rate,
                                              "burst": burst})
        await asyncio.sleep(2.0)
        started = time.monotonic()
        limited = await run_load(doors.url, concurrency=16, duration=2.0,
                                 fresh_connections=True)
        elapsed = time.monotonic() - started
    parts = settings.queue.partitions
    admitted = limited.statuses[202]
    assert admitted <= burst + rate * elapsed + parts
    assert admitted >= rate * (elapsed - 0.5) - parts
    assert limited.statuses[429] > 0


async def test_redis_outage_answers_503_fast_and_recovers(
    test_settings: Settings, tmp_path: Path,
) -> None:
    from gelombang.services import start_redis

    redis_server = start_redis(tmp_path / "redis", log_file=tmp_path / "redis.log")
    settings = test_settings.model_copy(update={"redis": test_settings.redis.model_copy(
        update={"url": redis_server.url})})
    settings = with_admission(settings, rate_per_second=100_000.0, burst=100_000)
    redis = Redis.from_url(redis_server.url)
    try:
        with door_processes(settings, tmp_path, processes=1) as doors:
            before = await run_load(doors.url, concurrency=8, duration=1.0)
            redis_server.kill()
            during = await run_load(doors.url, concurrency=8, duration=1.5)
            async with aiohttp.ClientSession() as session, session.get(
                doors.url + "/readyz"
            ) as response:
                assert response.status == 503
            redis_server.start()
            # The door reconnects by itself: no restart.
            recovered = None
            for _ in range(50):
                recovered = await run_load(doors.url, concurrency=4, duration=0.2)
                if recovered.statuses[202]:
                    break
            after = await run_load(doors.url, concurrency=8, duration=1.0)
        assert before.statuses[202] > 0
        assert set(during.statuses) == {503}
        assert set(during.codes) == {"queue_unavailable"}
        assert during.slow == []  # every 503 within a second
        assert max(during.latencies) < 1.0
        assert min(during.retry_after) >= 1
        assert during.connection_errors == 0
        assert recovered is not None and recovered.statuses[202] > 0
        assert after.statuses[202] > 0
        # AOF with appendfsync always: every 202 from before the kill survived it.
        queued = set(await queued_ids(redis, settings.queue.partitions))
        for ids in (before.accepted_ids, recovered.accepted_ids, after.accepted_ids):
            assert set(ids) <= queued
    finally:
        await redis.aclose()
        redis_server.stop()


async def test_sigterm_under_load_answers_every_admitted_request(
    test_settings: Settings, redis_client: RedisClient, tmp_path: Path,
) -> None:
    settings = with_admission(test_settings, rate_per_second=100_000.0, burst=100_000)
    with door_processes(settings, tmp_path, processes=2) as doors:
        load = asyncio.create_task(run_load(doors.url, concurrency=32, duration=6.0))
        await asyncio.sleep(1.5)
        stopped_at = time.monotonic()
        exit_code = await asyncio.to_thread(doors.terminate, 20.0)
        stop_seconds = time.monotonic() - stopped_at
        result = await load
        log = doors.log_text()
    assert exit_code == 0
    assert stop_seconds < settings.door.shutdown_deadline_seconds + 2
    assert "draining" in log and "stopped" in log
    assert result.statuses[202] > 100
    assert set(result.statuses) <= {202}
    # Every admitted registration got its 202, and every 202 has its entry.
    queued = await queued_ids(redis_client, settings.queue.partitions)
    assert len(queued) == len(set(queued))
    assert set(queued) == set(result.accepted_ids)
    assert math.isfinite(stop_seconds)
