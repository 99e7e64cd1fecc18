"""`gelombang surge`: short versions of each scenario against the real stack."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from gelombang.devstate import render_toml
from gelombang.processes import free_port
from loadtest.loss_check import _stored_by_status
from loadtest.registrants import RegistrantFactory
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
                drain: bool = True, settle: int = 20, endpoints: bool = True,
                cwd: Path = REPO_ROOT, env: dict[str, str] | None = None,
                ) -> tuple[int, dict[str, Any], str]:
    """Run the command (with the drain in this process); exit status, summary, output."""
    command = [sys.executable, "-m", "gelombang", "surge", *args, "--out", str(out),
               "--settle", str(settle), "--page-seconds", "3", "--p99-budget", "5000"]
    if endpoints:
        command += ["--target", door.url, "--admin-url", door.admin_url,
                    "--admin-token", ADMIN_TOKEN, "--dsn", settings.postgres.dsn]
    if env is None:
        # The test's settings, named: without GELOMBANG_CONFIG the command takes a dev
        # stack's config from the checkout (.dev/, `make up`), whose Redis and
        # PostgreSQL may be stopped or another's.
        config = out.parent / f"{out.name}-surge.toml"
        config.write_text(render_toml(settings.model_dump(mode="json")))
        env = {**os.environ, "GELOMBANG_CONFIG": str(config)}
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
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


async def test_a_run_that_cannot_reach_its_planned_rate_fails(
        door: DoorProcesses, test_settings: Settings, tmp_path: Path) -> None:
    # One applicant in flight at a time, each on the page for a few seconds:
    # the generator can offer a few of the 80 planned arrivals, as a
    # saturated load generator would. Everything it did offer is stored.
    out = tmp_path / "short"
    code, summary, output = await surge(
        door, test_settings, out, "soak", "--rate", "20", "--duration", "4",
        "--max-in-flight", "1")
    assert code == 1, output[-1500:]
    assert summary["loss_check"]["missing"] == 0 and summary["admitted"] > 0
    assert summary["arrivals"]["share_of_plan"] < 0.5
    assert summary["arrivals"]["not_offered_generator_full"] > 0
    assert summary["passed"] is False
    last = output.rstrip().splitlines()[-1]
    assert last.startswith("surge FAILED: arrivals reached "), last
    assert "at least 95% needed" in last


def closed_port_url() -> str:
    """A loopback URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("missing", ["the door", "the admin API", "PostgreSQL"])
async def test_a_missing_dependency_stops_the_surge_before_any_load_with_one_line(
        door: DoorProcesses, test_settings: Settings, tmp_path: Path, missing: str) -> None:
    target, admin, dsn = door.url, door.admin_url, test_settings.postgres.dsn
    if missing == "the door":
        target = closed_port_url()
    elif missing == "the admin API":
        admin = closed_port_url()
    else:
        dsn = f"postgresql://gelombang@127.0.0.1:{free_port()}/gelombang"
    out = tmp_path / "never"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gelombang", "surge", "soak", "--rate", "5", "--duration", "2",
        "--target", target, "--admin-url", admin, "--admin-token", ADMIN_TOKEN, "--dsn", dsn,
        "--out", str(out), cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    errors = stderr.decode().strip().splitlines()
    assert process.returncode == 3
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"gelombang surge: {missing} does not answer at "), errors
    assert "connection refused" in errors[0]
    assert "Traceback" not in stdout.decode() + stderr.decode()
    assert not out.exists()  # nothing was sent, nothing reported


async def test_the_dev_stacks_config_is_found_without_gelombang_config(
        door: DoorProcesses, test_settings: Settings, tmp_path: Path) -> None:
    # A checkout where `make up` ran: .dev/gelombang.toml names the door's
    # ports, the admin token and PostgreSQL. No GELOMBANG_CONFIG, no flags.
    checkout = tmp_path / "checkout"
    (checkout / ".dev").mkdir(parents=True)
    shutil.copy(tmp_path / "door.toml", checkout / ".dev" / "gelombang.toml")
    env = {key: value for key, value in os.environ.items() if key != "GELOMBANG_CONFIG"}
    out = tmp_path / "found"
    code, summary, output = await surge(
        door, test_settings, out, "soak", "--rate", "10", "--duration", "2",
        endpoints=False, cwd=checkout, env=env)
    assert code == 0, output[-1500:]
    assert output.startswith(f"config: {checkout / '.dev' / 'gelombang.toml'} (the dev stack's")
    assert summary["target"] == door.url
    assert summary["loss_check"]["method"] == "postgresql"
    assert_clean(summary, out)
