"""Surge scenarios: the arrival rate over time, and the users that produce it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loadtest.recorder import Recorder, merge, percentile
from loadtest.scenarios import OPENING_RATE_PER_SECOND, Scenario, parse_rate


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
