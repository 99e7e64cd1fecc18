"""Every process's counters in Redis: two real door processes and a worker, summed by role."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from queueing import process_reports
from queueing.keys import DOOR_REPORTS, door_report
from queueing.redis_client import RedisClient
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.door_helpers import DoorUnderTest, running_door
from tests.support import door_processes
from tests.workers.verification_helpers import eventually
from workers.runtime.heartbeat import Heartbeat

AUTH = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}


async def processes(admin_url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(
            admin_url + "/admin/v1/processes", headers=AUTH) as reply:
        assert reply.status == 200
        body: dict[str, Any] = await reply.json()
        return body


@pytest.mark.slow
async def test_two_door_processes_report_and_any_door_answers_for_both(
    test_settings: Settings, redis_client: RedisClient, registrants: RegistrantFactory,
    tmp_path: Path,
) -> None:
    with door_processes(test_settings, tmp_path, processes=2) as doors:
        admitted = 0
        async with aiohttp.ClientSession() as session:
            for _ in range(12):
                async with session.post(doors.url + "/v1/registrations",
                                        json=registrants.make().body()) as reply:
                    admitted += reply.status == 202
        assert admitted == 12

        async def both_reported_everything() -> bool:
            body = await processes(doors.admin_url)
            doors_seen = [p for p in body["processes"] if p["role"] == "door"]
            return (len(doors_seen) == 2 and not any(p["stale"] for p in doors_seen)
                    and body["totals"].get("door", {}).get("admitted") == admitted)

        await eventually(both_reported_everything, within=15, what="both doors' reports")
        body = await processes(doors.admin_url)
        rows = [p for p in body["processes"] if p["role"] == "door"]
        assert len({row["pid"] for row in rows}) == 2
        # Each process counts its own share; the total is their sum, not one pod's view.
        assert sum(row["counters"]["admitted"] for row in rows) == admitted
        assert {"limited", "backlog_full", "closed", "email_verified"} <= set(rows[0]["counters"])
    # A clean stop withdraws each door's report.
    assert await redis_client.zcard(DOOR_REPORTS) == 0


async def test_workers_are_read_beside_doors_and_stale_ones_are_marked_not_summed(
    door_under_test: DoorUnderTest, redis_client: RedisClient,
) -> None:
    counts = {"stored": 40, "batches": 3, "dead_letters": 0}
    beat = Heartbeat(redis_client, "drain", "drain-test-1", 5.0, lambda: counts)
    await beat.beat()
    await process_reports.publish(redis_client, "door-old", 2.0, {"admitted": 1000.0},
                                  time.time() - 60)
    # Its last report 7 s ago: more than three of its 2 s periods.
    await redis_client.zadd(DOOR_REPORTS, {"door-old": time.time() - 7})
    await process_reports.publish(redis_client, "door-gone", 2.0, {"admitted": 5.0}, 0.0)
    await redis_client.delete(door_report("door-gone"))  # expired: only its name is left

    async def everyone_there() -> bool:
        body = await processes(str(door_under_test.admin.make_url("")).rstrip("/"))
        fresh_doors = [p for p in body["processes"] if p["role"] == "door" and not p["stale"]]
        return bool(fresh_doors) and {p["name"] for p in body["processes"]} >= {
            "drain-test-1", "door-old"}

    await eventually(everyone_there, within=10, what="the reports")
    body = await processes(str(door_under_test.admin.make_url("")).rstrip("/"))
    by_name = {p["name"]: p for p in body["processes"]}
    assert "door-gone" not in by_name
    assert by_name["door-old"]["stale"] is True
    drain = by_name["drain-test-1"]
    assert (drain["role"], drain["stale"], drain["counters"]) == (
        "drain", False, {"stored": 40.0, "batches": 3.0, "dead_letters": 0.0})
    assert body["totals"]["drain"]["stored"] == 40
    # The stale door's 1,000 are not in the total: only the in-process door's own count.
    fresh = [p for p in body["processes"] if p["role"] == "door" and not p["stale"]]
    assert [p["name"] for p in fresh] == [process_reports.door_name()]
    assert body["totals"]["door"]["admitted"] == fresh[0]["counters"]["admitted"]
    assert [p["role"] for p in body["processes"]] == sorted(
        (p["role"] for p in body["processes"]), key=["door", "drain", "email", "nik"].index)


async def test_a_closed_door_stops_reporting_and_withdraws_its_report(
    test_settings: Settings, redis_client: RedisClient,
) -> None:
    async with running_door(test_settings):
        async def reported() -> bool:
            return bool(await redis_client.zcard(DOOR_REPORTS))

        await eventually(reported, within=10, what="the door's first report")
    # Nothing reports on for a door that is gone (a lost cancel once left a loop running).
    assert [t for t in asyncio.all_tasks() if t.get_name() == "counter reports"] == []
    assert await redis_client.zcard(DOOR_REPORTS) == 0
    assert await redis_client.keys("gelombang:doors:*") == []
