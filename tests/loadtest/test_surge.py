"""`gelombang surge`: short versions of each scenario against the real stack."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from loadtest.surge_command import _stored_by_status
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.door_helpers import DoorUnderTest
from tests.support import REPO_ROOT, DoorProcesses, door_processes, seal_people
from tests.workers.drain_helpers import drain_settings, running_drain
from workers.drain.store import store_batch

ADMIN_TOKEN = TEST_ADMIN_TOKEN


@pytest.fixture
def door(test_settings: Settings, tmp_path: Path, redis_client: Redis,
         pg: asyncpg.Connection) -> Iterator[DoorProcesses]:
    """One door process (a real `gelombang serve`), on an empty Redis and database."""
    with door_processes(test_settings, tmp_path, processes=1) as doors:
        yield doors


async def surge(door: DoorProcesses, settings: Settings, out: Path, *args: str,
                drain: bool = True, settle: int = 20) -> tuple[int, dict[str, Any], str]:
    """Run the command (with the drain in this process); exit status, summary, output."""
    command = [sys.executable, "-m", "gelombang", "surge", *args, "--target", door.url,
               "--admin-url", door.admin_url, "--admin-token", ADMIN_TOKEN,
               "--dsn", settings.postgres.dsn, "--out", str(out), "--settle", str(settle),
               "--page-seconds", "3", "--p99-budget", "5000"]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    if drain:
        async with running_drain(drain_settings(settings)):
            output, _ = await asyncio.wait_for(process.communicate(), 120)
    else:
        output, _ = await asyncio.wait_for(process.communicate(), 120)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    assert process.returncode is not None
    return process.returncode, summary, output.decode(errors="replace")


def assert_clean(summary: dict[str, Any], out: Path) -> None:
    loss = summary["loss_check"]
    assert loss["admitted"] == summary["admitted"] > 0
    assert loss["stored"] == loss["admitted"] and loss["missing"] == 0
    assert summary["unexpected_5xx"] == summary["errors"] == 0
    assert summary["contract_mismatches"] == summary["idempotency_mismatches"] == 0
    for name in ("locust_stats.csv", "locust.html", "plot.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name


async def test_a_short_opening_wave_is_admitted_and_stored(
        door: DoorProcesses, test_settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "wave"
    code, summary, output = await surge(
        door, test_settings, out, "opening-wave", "--rate", "1200/min", "--ramp", "1",
        "--duration", "3", "--decay", "1")
    assert code == 0, output[-1500:]
    assert_clean(summary, out)
    # About 20/s for 3 s, plus the ramp and decay: at most that many are sent
    # (none after the schedule ends). How close a loaded machine comes to the
    # plan is a figure of the report (docs/surge.md), not a pass mark here.
    assert 0 < summary["offered"] <= 110
    assert summary["achieved_arrival_rate_per_s"]["peak"] > 0
    assert summary["status_polls"] > 0
    assert summary["latency_202_ms"]["p99"] is not None
    assert "loss check     OK" in output
    # The progress line, while it ran (the master's, passed through).
    assert re.search(r"^progress +\d+ s  offered \d+  admitted \d+  refused \d+  p99 ", output,
                     re.MULTILINE), output[:1500]
    assert output.rstrip().splitlines()[-1].startswith("surge PASSED: arrivals ")


async def test_step_ramp_reports_each_step(
        door: DoorProcesses, test_settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "steps"
    code, summary, output = await surge(
        door, test_settings, out, "step-ramp", "--rate", "30", "--steps", "2",
        "--duration", "4")
    assert code == 0, output[-1500:]
    assert_clean(summary, out)
    assert [step["step"] for step in summary["steps"]] == [1, 2]
    first, second = (step["offered_per_s"] for step in summary["steps"])
    assert second > first, summary["steps"]


async def test_a_soak_runs_across_a_master_and_two_workers(
        door: DoorProcesses, test_settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "soak"
    code, summary, output = await surge(
        door, test_settings, out, "soak", "--rate", "15", "--duration", "4",
        "--workers", "2")
    assert code == 0, output[-1500:]
    assert_clean(summary, out)
    assert 0 < summary["offered"] <= 75  # 15/s for 4 s at most
    # Both workers' records reached the master (over Locust's messages, not
    # files): the report names two sources, each with admitted applicants,
    # and together they are the report's totals.
    sources = summary["sources"]
    assert len(sources) == 2, sources
    assert all(totals["admitted"] > 0 for totals in sources.values()), sources
    assert sum(totals["offered"] for totals in sources.values()) == summary["offered"]
    assert sum(totals["admitted"] for totals in sources.values()) == summary["admitted"]
    assert summary["loss_check"]["repeated_ids"] == 0
    assert [path.name for path in (out / "records").glob("*.json")] == ["run.json"]
    assert "workers        " in output


async def test_a_retry_storm_is_limited_and_retried_then_admission_is_restored(
        door: DoorProcesses, test_settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "storm"
    code, summary, output = await surge(
        door, test_settings, out, "retry-storm", "--rate", "30", "--duration", "4",
        "--admission-rate", "3")
    assert code == 0, output[-1500:]
    assert_clean(summary, out)
    assert summary["limited"] > 0 and summary["retries"] > 0
    assert summary["admitted"] < summary["offered"]
    # Arrivals do not wait for answers: 10 % admission and its retries do not
    # slow the arrivals below the plan.
    assert summary["arrivals"]["share_of_plan"] >= 0.95
    import urllib.request

    request = urllib.request.Request(f"{door.admin_url}/admin/v1/admission",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: ASYNC210
        admission = json.load(reply)
    assert admission["rate_per_second"] == test_settings.admission.rate_per_second


async def test_the_loss_check_fails_when_admitted_registrations_are_not_stored(
        door: DoorProcesses, test_settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "lost"
    code, summary, output = await surge(
        door, test_settings, out, "soak", "--rate", "10", "--duration", "2",
        drain=False, settle=0)
    assert code == 1
    assert summary["loss_check"]["missing"] == summary["admitted"] > 0
    assert "loss check     FAILED" in output


async def test_the_loss_check_by_status_counts_queued_registrations_as_not_stored(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    stored, queued = seal_people(test_settings, [registrants.make(), registrants.make()])
    await store_batch(pg, 0, 0, [stored])
    target = str(door_under_test.public.make_url("")).rstrip("/")
    ids = [str(uuid.UUID(bytes=e.registration_id)) for e in (stored, queued)]

    assert await _stored_by_status(target, ids) == 1
