"""`gelombang status`: its figures against a real door, and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis
from rich.console import Console

from config.settings import Settings
from gelombang.status_command import show_once
from gelombang.status_fleet import FleetRates
from gelombang.status_sample import Frame, make_frame, parse_metrics, with_processes
from gelombang.status_view import render_frame
from loadtest.registrants import RegistrantFactory
from queueing.keys import AUDIT_STREAM
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.door_helpers import DoorUnderTest, running_door, with_admission
from tests.support import door_processes


def admin_url(door: DoorUnderTest) -> str:
    return str(door.admin.make_url("")).rstrip("/")


async def post(door: DoorUnderTest, registrants: RegistrantFactory, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        async with door.public.post("/v1/registrations", json=registrants.make().body()) as r:
            statuses.append(r.status)
    return statuses


METRICS = """\
# TYPE gelombang_admission_decisions_total counter
gelombang_admission_decisions_total{outcome="admitted"} 10.0
gelombang_admission_decisions_total{outcome="limited"} 4.0
gelombang_admission_decisions_total{outcome="backlog_full"} 1.0
gelombang_admission_decisions_total{outcome="closed"} 2.0
# TYPE gelombang_backlog_entries gauge
gelombang_backlog_entries{partition="0"} 3.0
gelombang_backlog_entries{partition="1"} 0.0
# TYPE gelombang_admission_rate_per_second gauge
gelombang_admission_rate_per_second 5.0
# TYPE gelombang_breaker_open gauge
gelombang_breaker_open{service="nik",worker="w1"} 1.0
"""


def test_rates_are_differences_over_time() -> None:
    before = parse_metrics(METRICS.replace("} 10.0", "} 4.0").replace("} 2.0", "} 0.0"))
    now = parse_metrics(METRICS)
    now = type(now)(before.at + 2.0, now.decisions, now.backlog, now.policy, now.breakers,
                    {"stored": 9, "accepted": 100, "email_sent": 60, "nik_verified": 30,
                     "nik_rejected": 10})
    before = type(before)(before.at, before.decisions, before.backlog, before.policy,
                          before.breakers, {"stored": 1, "accepted": 90, "email_sent": 40,
                                            "nik_verified": 40})
    frame = make_frame(now, before, before)
    assert (frame.admitted_per_second, frame.limited_per_second, frame.shed_per_second,
            frame.drained_per_second) == (3.0, 0.0, 1.0, 4.0)
    pace = frame.verification
    assert pace is not None
    assert (pace.emails_per_second, pace.nik_checks_per_second) == (10.0, 0.0)
    assert (pace.emails_waiting, pace.nik_checks_waiting) == (40, 60)
    # 40 emails at 10/s: 4 s; NIK checks not moving: no time to give.
    assert (pace.emails_clear_seconds, pace.nik_checks_clear_seconds) == (4.0, None)
    assert frame.backlog == {"0": 3.0, "1": 0.0}
    assert frame.policy == {"rate_per_second": 5.0}
    assert frame.breakers == {"nik:w1": True}


async def test_once_prints_the_doors_figures(
    test_settings: Settings, redis_client: Redis, pg: asyncpg.Connection,
    registrants: RegistrantFactory,
) -> None:
    settings = with_admission(test_settings, rate_per_second=7.5)
    settings = settings.model_copy(update={"waiting_room": settings.waiting_room.model_copy(
        update={"enabled": True})})
    async with running_door(settings) as door:
        assert await post(door, registrants, 3) == [202, 202, 202]
        out = io.StringIO()
        status = await show_once(admin_url(door), TEST_ADMIN_TOKEN, 0.0,
                                 Console(file=out, width=160), asyncio.Event())
    text = out.getvalue()
    assert status == 0
    assert "rate in force" in text and "7.5 /s" in text
    assert re.search(r"│ backlog +│ +3 │", text)
    assert "dead_letter" in text and "Backlog per partition" in text
    # Nothing stored yet, so nothing waits for verification: clear now.
    assert re.search(r"│ email +│ +0 │ +0 │ +0 s │", text), text
    # No wave scheduled: the standing line, empty, released at the admission rate.
    assert "Waiting room" in text and re.search(r"│ wave in force +│ +standing │", text), text
    assert re.search(r"│ release rate +│ +7.5 /s │", text), text


async def test_once_fails_with_a_wrong_token(door_under_test: DoorUnderTest,
                                             redis_client: Redis) -> None:
    out = io.StringIO()
    status = await show_once(admin_url(door_under_test), "wrong", 0.0,
                             Console(file=out), asyncio.Event())
    assert status == 1 and out.getvalue() == ""


async def test_the_live_view_ends_cleanly_on_sigterm(
    door_under_test: DoorUnderTest, redis_client: Redis, pg: asyncpg.Connection,
) -> None:
    env = {**os.environ, "GELOMBANG_ADMIN__TOKEN": TEST_ADMIN_TOKEN}
    env.pop("GELOMBANG_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gelombang", "status", "--url", admin_url(door_under_test),
        "--interval", "0.2", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        # Its first admin read (processes, funnel) is audited: from then on it draws frames.
        assert await redis_client.xread({AUDIT_STREAM: "0"}, count=1, block=30_000)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert b"Traceback" not in stderr
    assert b"Funnel" in stdout


def _report(name: str, role: str, at: float, stale: bool = False,
            **counters: float) -> dict[str, object]:
    return {"name": name, "role": role, "host": "h", "pid": 1, "reported_at": at,
            "age_seconds": 0.5, "stale": stale, "counters": counters}


def test_deployment_rates_are_each_process_over_its_own_reports() -> None:
    fleet = FleetRates()
    first = fleet.update([_report("door-a", "door", 100.0, admitted=10, limited=0),
                          _report("door-b", "door", 101.0, admitted=50, closed=1),
                          _report("drain-1", "drain", 100.0, stored=0)])
    assert [row.rates for row in first] == [None, None, None]
    rows = fleet.update([
        # 20 more in 2 s; b 30 more and 3 shed in 3 s; the drain restarted (counter down).
        _report("door-a", "door", 102.0, admitted=30, limited=4),
        _report("door-b", "door", 104.0, admitted=80, closed=2, backlog_full=2),
        _report("drain-1", "drain", 105.0, stored=7),
        _report("door-c", "door", 104.0, stale=True, admitted=999)])
    by_name = {row.name: row for row in rows}
    assert by_name["door-a"].rates == {"admitted": 10.0, "limited": 2.0, "shed": 0.0,
                                       "email_verified": 0.0}
    assert by_name["door-b"].rates == {"admitted": 10.0, "limited": 0.0, "shed": 1.0,
                                       "email_verified": 0.0}
    assert by_name["drain-1"].rates == {"stored": 7 / 5}
    # A report seen again unchanged keeps its rates; one that left the reading is forgotten.
    again = fleet.update([_report("door-a", "door", 102.0, admitted=30, limited=4)])
    assert again[0].rates == by_name["door-a"].rates
    # The deployment's admission rates: the sum over fresh doors (door-c is stale).
    frame = with_processes(make_frame(parse_metrics(METRICS), None, None), rows)
    assert (frame.admitted_per_second, frame.limited_per_second,
            frame.shed_per_second) == (20.0, 2.0, 1.0)
    text = _render(frame)
    assert "STALE" in text and "total of 2" in text and "stored 1.4" in text


def test_the_waiting_room_shows_the_line_in_force_and_the_next_wave() -> None:
    waves = {"enabled": True, "in_force": {
        "wave": "gelombang-1", "phase": "open", "waiting": 30000, "prequeue": 200000,
        "drawn": 200000, "served": 190000, "tail": 221000, "expired": 1000, "used": 180000,
        "release_rate": 50.0, "eta_last_seconds": 600},
        "waves": [{"wave": "gelombang-1", "phase": "open"},
                  {"wave": "gelombang-2", "phase": "scheduled",
                   "prequeue_from": "2026-12-08T01:00:00Z"}]}
    frame = dataclasses.replace(make_frame(parse_metrics(METRICS), None, None), waves=waves)
    text = _render(frame)
    for row in (r"wave in force +│ +gelombang-1", r"phase +│ +open", r"waiting +│ +30,000",
                r"served / tail +│ +190,000 / 221,000", r"tickets expired +│ +1,000",
                r"tickets used +│ +180,000", r"release rate +│ +50 /s",
                r"last person served in +│ +10 min",
                r"next wave +│ +gelombang-2 at 2026-12-08T01:00:00Z"):
        assert re.search(row, text), row
    assert "in the pre-queue" not in text  # shown only during the pre-queue
    assert "no reading" in _render(make_frame(parse_metrics(METRICS), None, None))


def _render(frame: Frame) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(render_frame(frame, "test"))
    return out.getvalue()


@pytest.mark.slow
async def test_once_shows_every_door_process_and_their_total(
    test_settings: Settings, redis_client: Redis, pg: asyncpg.Connection,
    registrants: RegistrantFactory, tmp_path: Path,
) -> None:
    with door_processes(test_settings, tmp_path, processes=2) as doors:
        stop = asyncio.Event()

        async def keep_posting() -> int:
            sent = 0
            async with aiohttp.ClientSession() as session:
                while not stop.is_set():
                    async with session.post(doors.url + "/v1/registrations",
                                            json=registrants.make().body()) as reply:
                        sent += reply.status == 202
                    await asyncio.sleep(0.02)
            return sent

        posting = asyncio.create_task(keep_posting())
        out = io.StringIO()
        try:
            status = await show_once(doors.admin_url, TEST_ADMIN_TOKEN, 4.5,
                                     Console(file=out, width=200), asyncio.Event())
        finally:
            stop.set()
            assert await posting > 0
    text = out.getvalue()
    assert status == 0, text
    assert len(re.findall(r"│ door +│ door-\S+ \(pid \d+\)", text)) == 2, text
    total = re.search(r"│ door +│ total of 2 +│ +│ admitted ([\d.,]+) ·", text)
    assert total is not None, text
    assert float(total[1].replace(",", "")) > 0
    admitted = re.search(r"│ admitted /s +│ +([\d.,]+) │", text)
    assert admitted is not None and admitted[1] == total[1]
