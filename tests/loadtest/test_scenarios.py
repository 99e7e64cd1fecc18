"""Surge scenarios: the arrival rate over time, and the users that produce it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from loadtest import applicant, thresholds
from loadtest.recorder import Recorder, merge, percentile, progress_line
from loadtest.scenarios import OPENING_RATE_PER_SECOND, Scenario, parse_rate
from tests.support import REPO_ROOT


def test_the_opening_wave_ramps_holds_and_decays() -> None:
    wave = Scenario("opening-wave")
    assert wave.rate == pytest.approx(80_000 / 60)
    assert wave.rate_at(0) == 0
    assert wave.rate_at(15) == pytest.approx(OPENING_RATE_PER_SECOND / 2)
    assert wave.rate_at(30) == wave.rate_at(89.9) == pytest.approx(OPENING_RATE_PER_SECOND)
    assert wave.rate_at(105) == pytest.approx(OPENING_RATE_PER_SECOND / 2)
    assert wave.rate_at(120) is None
    assert wave.total_seconds == 120
    # 0.5 applications a second per user: 2,667 users at the plateau.
    assert wave.users_at(60) == 2667
    # The plateau alone carries 80,000 arrivals in its 60 s.
    assert sum(wave.rate_at(30 + s) or 0 for s in range(60)) == pytest.approx(80_000)


def test_step_ramp_climbs_evenly_to_the_rate() -> None:
    steps = Scenario("step-ramp", rate=1000, duration=10, steps=5)
    assert [steps.rate_at(10 * i + 1) for i in range(5)] == [200, 400, 600, 800, 1000]
    assert steps.rate_at(50) is None
    assert Scenario("step-ramp", rate=100, start_rate=50, steps=3, duration=1).rate_at(1) == 75


@pytest.mark.parametrize("name", ["soak", "retry-storm"])
def test_steady_scenarios_hold_the_rate_for_the_duration(name: str) -> None:
    steady = Scenario(name, rate=10, duration=5)
    assert steady.rate_at(0) == steady.rate_at(4.9) == 10
    assert steady.rate_at(5) is None
    assert steady.users_at(1) == 20


def test_there_is_always_at_least_one_user_while_running() -> None:
    assert Scenario("opening-wave", rate=10).users_at(0) == 1


def test_the_scenario_travels_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = Scenario("soak", rate=12.5, duration=3, verify_share=0.0)
    monkeypatch.setenv("GELOMBANG_SURGE", scenario.to_env())
    assert Scenario.from_env() == scenario


@pytest.mark.parametrize(("text", "per_second"), [
    ("1333", 1333), ("1333/s", 1333), ("80000/min", 80_000 / 60), ("3600/h", 1)])
def test_rates_are_read_per_second_or_minute(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["0", "-5/s", "10/day", "fast"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_process_records_add_up(tmp_path: Path) -> None:
    folder = tmp_path
    first, second = Recorder(), Recorder()
    first.count("offered", 3, at=100.2)
    first.admitted("a", 5.0, at=100.5)
    second.count("offered", 2, at=100.9)
    second.count("shed", at=101.0)
    second.admitted("b", 7.0, at=101.1)
    first.write(folder)
    # Another process's file, as a second Locust worker would write it.
    pid_file = folder / f"process-{os.getpid()}.json"
    pid_file.rename(folder / "process-1.json")
    second.write(folder)
    merged = merge(folder)
    assert merged.total("offered") == 5 and merged.total("admitted") == 2
    assert merged.counts[100] == {"offered": 5, "admitted": 1}
    assert sorted(merged.admitted_ids) == ["a", "b"]
    assert merged.all_latencies() == [5.0, 7.0]


def test_percentiles_use_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([3.0], 0.99) == 3
    assert percentile([], 0.5) is None


@pytest.mark.parametrize(("scenario", "planned"), [
    (Scenario("opening-wave"), 120_000),  # the plateau's 80,000, and 20,000 on each slope
    (Scenario("opening-wave", rate=20, ramp=1, duration=3, decay=1), 80),
    (Scenario("step-ramp", rate=1000, duration=10, steps=5), 30_000),
    (Scenario("soak", rate=15, duration=4), 60),
])
def test_the_planned_arrivals_are_the_rate_over_the_schedule(
        scenario: Scenario, planned: float) -> None:
    assert scenario.planned_arrivals() == pytest.approx(planned, rel=1e-3)


def test_a_worker_message_reaches_the_master_with_its_source() -> None:
    worker, master = Recorder(), Recorder()
    worker.count("offered", 2, at=100.0)
    worker.admitted("a", 12.0, at=100.0)
    master.absorb(worker.take(), source="worker-1")
    # Taken: the worker's next message carries only what is new.
    worker.count("offered", at=101.0)
    worker.admitted("b", 30.0, at=101.0)
    master.absorb(worker.take(), source="worker-1")
    master.absorb({"counts": {"101": {"offered": 4}}, "latencies": {}, "admitted_ids": [],
                   "statuses": {}}, source="worker-2")
    assert worker.total("offered") == 0 and worker.admitted_ids == []
    assert master.total("offered") == 7 and master.admitted_ids == ["a", "b"]
    assert master.sources == {"worker-1": {"offered": 3, "admitted": 2},
                              "worker-2": {"offered": 4, "admitted": 0}}
    assert master.p99_so_far() == 30.0


def test_the_progress_line_names_the_figures_and_nothing_personal() -> None:
    recorder = Recorder()
    recorder.count("offered", 5, at=1.0)
    recorder.count("limited", 2, at=1.0)
    recorder.count("shed", 1, at=1.0)
    recorder.admitted("00000000-0000-0000-0000-000000000001", 44.2, at=1.0)
    assert progress_line(recorder, 12.4) == (
        "   12 s  offered 5  admitted 1  refused 3  p99 45 ms")
    assert progress_line(Recorder(), 0).endswith("p99 n/a")


def summary_with(share: float, p99: float | None, missing: int = 0) -> dict[str, Any]:
    return {"arrivals": {"share_of_plan": share, "offered": int(share * 1000),
                         "planned": 1000.0},
            "latency_202_ms": {"p99": p99},
            "loss_check": {"missing": missing, "admitted": 900},
            "unexpected_5xx": 0, "contract_mismatches": 0, "idempotency_mismatches": 0}


def test_a_run_at_17_percent_of_its_plan_fails() -> None:
    marks = thresholds.for_scenario("opening-wave")
    reasons = thresholds.failures(summary_with(0.17, 857.0), marks, 0)
    assert reasons == ["arrivals reached 17% of the plan (170 of 1,000; at least 95% needed)"]
    assert thresholds.verdict_line(summary_with(0.17, 857.0), marks, reasons).startswith(
        "surge FAILED: arrivals reached 17%")


def test_thresholds_judge_the_p99_the_loss_and_locust() -> None:
    marks = thresholds.for_scenario("soak", p99_budget_ms=200)
    assert thresholds.failures(summary_with(0.97, 150.0), marks, 0) == []
    assert thresholds.failures(summary_with(0.97, 250.0, missing=3), marks, 2) == [
        "p99 of 202s 250 ms, over the budget of 200 ms",
        "3 of 900 admitted registrations are not stored",
        "Locust exited with status 2 (see locust.log)"]
    assert thresholds.for_scenario("step-ramp").p99_budget_ms == 2000
    assert thresholds.for_scenario("retry-storm", min_arrival_share=0.5).min_arrival_share == 0.5


def test_the_applicant_retries_on_the_forms_figures() -> None:
    # The simulated applicant must wait as the real form does: the figures of
    # retryDelay (intake/web/form-base.js) and MAX_TRIES (form-send.js).
    web = REPO_ROOT / "intake" / "web"
    backoff = re.search(r"BACKOFF = \{ base: (\d+), cap: (\d+), floor: (\d+), "
                        r"retryAfterCap: (\d+) \}", (web / "form-base.js").read_text())
    tries = re.search(r"const MAX_TRIES = (\d+);", (web / "form-send.js").read_text())
    assert backoff is not None and tries is not None
    base, cap, floor, after_cap = map(float, backoff.groups())
    assert (applicant.BACKOFF_BASE, applicant.BACKOFF_CAP, applicant.RETRY_FLOOR,
            applicant.RETRY_AFTER_CAP) == (base, cap, floor, after_cap)
    assert applicant.MAX_TRIES == int(tries.group(1))
    # Never sooner than Retry-After; a random share of a back-off doubling to its cap.
    assert applicant.retry_delay(0, 0.0, 0.0) == floor
    assert applicant.retry_delay(0, 3.0, 1.0) == 3.0 + base
    assert applicant.retry_delay(3, 3.0, 0.5) == 3.0 + 0.5 * base * 8
    assert applicant.retry_delay(30, 1e9, 1.0) == after_cap + cap
