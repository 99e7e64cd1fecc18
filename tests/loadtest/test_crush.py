"""opening-crush: the scenario, its wave, the door's readings, its report and thresholds."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from loadtest import crush, report, thresholds
from loadtest.preflight import SurgeCannotStart
from loadtest.recorder import Merged
from loadtest.scenarios import Scenario


def test_the_crush_is_n_over_two_minutes_released_at_n_over_200() -> None:
    scenario = Scenario.opening_crush()
    assert scenario.registrants == 30_000 and scenario.rate == 250
    assert scenario.admission_rate == 150
    assert scenario.planned_arrivals() == pytest.approx(30_000)
    assert scenario.rate_at(-1) == 0 and scenario.rate_at(119.9) == 250
    assert scenario.rate_at(120) is None
    # The page stays open for the pre-queue and twice the line's length, and more.
    assert scenario.page_seconds == 60 + 2 * 200 + 120
    assert scenario.max_in_flight >= 30_000
    # Every arrival is a valid registrant of their own, a share with three tabs.
    assert (scenario.duplicate_share, scenario.invalid_share, scenario.double_submit_share,
            scenario.verify_share, scenario.poll_share) == (0, 0, 0, 0, 0)
    assert scenario.tabs_share == 0.05
    assert Scenario.opening_crush(300_000).admission_rate == 1_500


def test_the_crush_travels_with_its_wave_and_start(monkeypatch: pytest.MonkeyPatch) -> None:
    wave = crush.plan_wave(Scenario.opening_crush(300), now=1_000.2)
    anchored = replace(Scenario.opening_crush(300), starts_at=1016.0, wave=wave.name)
    monkeypatch.setenv("GELOMBANG_SURGE", anchored.to_env())
    assert Scenario.from_env() == anchored


def test_the_wave_opens_its_pre_queue_after_a_lead_and_closes_after_every_page() -> None:
    scenario = Scenario.opening_crush(30_000)
    wave = crush.plan_wave(scenario, now=1_000.2)
    assert wave.name == "crush-19700101t001640"
    assert wave.prequeue_from == 1_016  # 15 s for Locust to start, to the second above
    assert wave.opens_at == 1_076       # minute 1
    assert wave.closes_at == 1_016 + 120 + 580 + 60
    assert crush.plan_wave(scenario, 0.0, "mine").name == "mine"


class FakeAdmin:
    """The admin API as the crush calls it: answers by (method, path prefix)."""

    admin = "http://admin.invalid"

    def __init__(self, answers: dict[tuple[str, str], tuple[int, Any]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, dict[str, Any] | None]] = []

    def admin_request(self, method: str, path: str, body: dict[str, Any] | None = None
                      ) -> tuple[int, Any]:
        self.calls.append((method, path, body))
        for (m, prefix), answer in self.answers.items():
            if m == method and path.startswith(prefix):
                return answer
        return 404, {"error": {"code": "not_found"}}


def test_set_up_sets_the_admission_rate_then_schedules_the_wave() -> None:
    scenario = Scenario.opening_crush(3_000)
    wave = crush.Wave("crush-x", 100, 160, 900)
    admin = FakeAdmin({("PUT", "/admin/v1/admission"): (200, {}),
                       ("PUT", "/admin/v1/waves/"): (200, {})})
    anchored = crush.set_up(admin, scenario, wave)
    assert admin.calls == [
        ("PUT", "/admin/v1/admission", {"rate_per_second": 15.0, "burst": 15}),
        ("PUT", "/admin/v1/waves/crush-x",
         {"prequeue_from": 100, "opens_at": 160, "closes_at": 900})]
    assert anchored.starts_at == 100.0 and anchored.wave == "crush-x"


def test_a_door_without_the_waiting_room_stops_the_crush_with_one_line() -> None:
    admin = FakeAdmin({("PUT", "/admin/v1/admission"): (200, {})})
    with pytest.raises(SurgeCannotStart, match=r"could not schedule the wave crush-x at "
                       r"http://admin.invalid \(status 404, not_found\): does this door have "
                       r"the waiting room"):
        crush.set_up(admin, Scenario.opening_crush(3_000), crush.Wave("crush-x", 1, 2, 3))


METRICS_BEFORE = """\
# HELP gelombang_queue_redis_calls_total Redis calls for tickets.
# TYPE gelombang_queue_redis_calls_total counter
gelombang_queue_redis_calls_total{kind="join"} 10.0
gelombang_queue_redis_calls_total{kind="tick"} 5.0
gelombang_queue_redis_calls_created{kind="join"} 1.7e9
gelombang_queue_tickets_total{event="polled"} 100.0
gelombang_queue_tickets_total{event="issued"} 7.0
gelombang_http_request_duration_seconds_bucket{le="0.005",route="queue.ticket",status="200"} 90.0
gelombang_http_request_duration_seconds_bucket{le="0.01",route="queue.ticket",status="200"} 100.0
gelombang_http_request_duration_seconds_bucket{le="+Inf",route="queue.ticket",status="200"} 100.0
gelombang_http_request_duration_seconds_bucket{le="0.005",route="registrations.x",status="202"} 3.0
"""
METRICS_AFTER = """\
gelombang_queue_redis_calls_total{kind="join"} 310.0
gelombang_queue_redis_calls_total{kind="tick"} 405.0
gelombang_queue_redis_calls_total{kind="lookup"} 600.0
gelombang_queue_tickets_total{event="polled"} 10100.0
gelombang_queue_tickets_total{event="issued"} 9.0
gelombang_http_request_duration_seconds_bucket{le="0.005",route="queue.ticket",status="200"} 9000.0
gelombang_http_request_duration_seconds_bucket{le="0.01",route="queue.ticket",status="200"} 10000.0
gelombang_http_request_duration_seconds_bucket{le="+Inf",route="queue.ticket",status="200"} 10100.0
gelombang_http_request_duration_seconds_bucket{le="0.005",route="queue.ticket",status="410"} 10.0
gelombang_http_request_duration_seconds_bucket{le="0.01",route="queue.ticket",status="410"} 10.0
gelombang_http_request_duration_seconds_bucket{le="+Inf",route="queue.ticket",status="410"} 10.0
"""
NAMES = (crush.REDIS_CALLS, crush.QUEUE_POLLS, crush.REQUEST_BUCKETS)


def test_the_doors_counters_are_read_from_prometheus_text() -> None:
    samples = crush.parse_metrics(METRICS_BEFORE, NAMES)
    assert samples[crush.REDIS_CALLS] == {(("kind", "join"),): 10.0,
                                          (("kind", "tick"),): 5.0}
    assert samples[crush.QUEUE_POLLS][(("event", "polled"),)] == 100.0
    # The ticket route's buckets only.
    assert {dict(labels)["route"] for labels in samples[crush.REQUEST_BUCKETS]} == {
        "queue.ticket"}


def test_the_door_figures_are_the_increase_over_the_run() -> None:
    before = crush.DoorReading(crush.parse_metrics(METRICS_BEFORE, NAMES), {7: 10.0, 8: 1.0})
    after = crush.DoorReading(crush.parse_metrics(METRICS_AFTER, NAMES), {7: 25.0, 9: 3.0})
    figures = crush.door_figures(before, after, client_polls=9_990)
    assert figures["redis_calls"] == 300 + 400 + 600
    assert figures["queue_polls"] == 10_000
    assert figures["redis_calls_per_poll"] == pytest.approx(0.13)
    assert figures["redis_calls_by_label"] == {"kind=join": 300, "kind=lookup": 600,
                                               "kind=tick": 400}
    # CPU of the processes seen both times only (pid 7): 15 s for 10,000 polls.
    assert figures["door_processes_measured"] == 1 and figures["cpu_seconds"] == 15.0
    assert figures["cpu_ms_per_poll_at_most"] == 1.5
    # 10,010 answers in the run; the p99's rank (9,910) falls in the 10 ms bucket.
    assert figures["ticket_routes"] == {"queue.ticket": {"answers": 10_010,
                                                         "p99_ms_at_most": 10.0}}


def test_a_p99_beyond_the_last_bucket_is_reported_as_over_it() -> None:
    before = crush.DoorReading(crush.parse_metrics(METRICS_BEFORE, NAMES))
    after = crush.DoorReading(crush.parse_metrics(METRICS_BEFORE.replace(
        'le="+Inf",route="queue.ticket",status="200"} 100.0',
        'le="+Inf",route="queue.ticket",status="200"} 200.0'), NAMES))
    assert crush.door_figures(before, after, 0)["ticket_routes"] == {
        "queue.ticket": {"answers": 100, "p99_ms_at_most": None, "p99_over_ms": 10.0}}


def test_a_door_without_the_counters_is_reported_as_not_measured() -> None:
    nothing = crush.DoorReading(None)
    figures = crush.door_figures(nothing, nothing, client_polls=50)
    assert figures["redis_calls_per_poll"] is None and figures["cpu_seconds"] is None
    assert figures["ticket_routes"] == {}
    lines = report.crush_lines(report.crush_summary(
        Scenario.opening_crush(2), merged_of([]), crush.Wave("w", 0, 60, 900).as_dict(),
        figures))
    assert any("Redis round trips per poll: not measured" in line for line in lines)
    assert any("CPU: not measured" in line for line in lines)


def test_a_processes_cpu_time_is_read_from_proc(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    # The command name may hold spaces and parentheses; utime 300, stime 100 ticks.
    (tmp_path / "42" / "stat").write_text(
        "42 (gelombang (door) x) S 1 42 42 0 -1 4194560 100 0 0 0 300 100 0 0 20 0 1 0\n")
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    assert crush.process_cpu_seconds(42, tmp_path) == pytest.approx(400 / ticks)
    assert crush.process_cpu_seconds(43, tmp_path) is None


def journey(registrant: str, position: int | None, admitted_at: float | None,
            joined_at: float = 0.0, eta: tuple[float, float] = (10.0, 14.0),
            ids: list[str] | None = None, prequeue: bool = False,
            polls: int = 2) -> dict[str, Any]:
    """A recorded journey, as loadtest/waiting_room.py writes it."""
    admitted = admitted_at is not None
    return {"registrant": registrant, "tabs": 1, "arrived_at": joined_at,
            "joined_at": joined_at, "prequeue": prequeue, "first_eta": list(eta),
            "placed_at": joined_at, "placed_eta": list(eta), "poll_after": 20.0,
            "position": position, "ticket_ids": ["t" + registrant],
            "admitted_at": admitted_at,
            "registration_ids": ids if ids is not None else ([f"r-{registrant}"]
                                                            if admitted else []),
            "accepted": 1 if admitted else 0, "polls": polls,
            "poll_ms": [3.0] * polls, "rejoins": 0}


def merged_of(journeys: list[dict[str, Any]], offered: int | None = None) -> Merged:
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    counts[0]["offered"] = len(journeys) if offered is None else offered
    counts[5]["queue_polls"] = sum(j["polls"] for j in journeys)
    return Merged(dict(counts), {}, [], {}, {}, journeys)


def fair_run() -> list[dict[str, Any]]:
    # Ten people, each admitted 1 s after the one before, 10 s after joining
    # (the ETA said 10 s).
    return [journey(f"k{p}", p, 10.0 + p, joined_at=float(p)) for p in range(1, 11)]


def summary_of(journeys: list[dict[str, Any]], offered: int | None = None) -> dict[str, Any]:
    figures = crush.door_figures(crush.DoorReading(None), crush.DoorReading(None), 0)
    return {"crush": report.crush_summary(Scenario.opening_crush(10), merged_of(
        journeys, offered), crush.Wave("w", 0, 60, 900).as_dict(), figures)}


def test_a_fair_crush_passes_every_mark() -> None:
    summary = summary_of(fair_run())
    figures = summary["crush"]
    assert figures["exactly_once"] == {"registrants": 10, "admitted_once": 10,
                                       "admitted_more": 0, "lost": 0, "shared_ids": 0,
                                       "unrecorded": 0}
    assert figures["order"]["kendall_tau"] == 1.0 and figures["order"]["late"] == 0
    assert figures["order"]["arrival_order_tau_after_opening"] == 1.0
    assert figures["eta_error"]["p90"] == 0.0 and figures["within_eta_p90_share"] == 1.0
    assert figures["wait_from_joining_s"]["p50"] == 10.0
    assert figures["polls"]["total"] == 20 and figures["polls"]["per_second_peak"] == 20
    marks = thresholds.for_scenario("opening-crush")
    assert thresholds.crush_failures(figures, marks) == []
    text = "\n".join(report.crush_lines(figures))
    assert "exactly once   OK: 10 of 10 admitted once" in text
    assert "Kendall tau 1.0000 over 10 admitted with a place" in text


def test_an_unfair_crush_fails_with_every_reason() -> None:
    people = fair_run()
    # Position 1 goes last, 9 s after position 2: late, and out of order.
    people[0] = journey("k1", 1, 20.0, joined_at=1.0)
    # Position 10 waited three times its ETA (an error of 2/3), position 1 19 s
    # for 10 (9/19): the p90 of ten errors is the second largest.
    people[9] = journey("k10", 10, 40.0, joined_at=10.0)
    people[3]["registration_ids"] = ["r-k4", "r-extra"]      # admitted twice
    people[4]["registration_ids"] = ["r-k3"]                 # someone else's id
    people.append(journey("k11", 11, None))                  # never admitted
    summary = summary_of(people, offered=13)                 # two never recorded
    reasons = thresholds.crush_failures(summary["crush"], thresholds.for_scenario(
        "opening-crush"))
    assert reasons == [
        "1 registrants admitted more than once",
        "1 registration ids answered to more than one registrant",
        "3 of 13 registrants never admitted (lost)",
        "admission order Kendall tau 0.6444, under 0.99",
        "1 admitted more than 2 s after someone behind them (worst 8.0 s)",
        "ETA error p90 47%, over 20%",
    ]
    assert summary["crush"]["order"]["worst_late_position"] == 1


def test_the_crush_marks_are_in_the_summary_and_the_verdict() -> None:
    marks = thresholds.for_scenario("opening-crush")
    assert thresholds.as_dict(marks, "opening-crush")["min_kendall_tau"] == 0.99
    assert "min_kendall_tau" not in thresholds.as_dict(marks, "soak")
    summary = {**summary_of(fair_run()), "arrivals": {"share_of_plan": 1.0},
               "latency_202_ms": {"p99": 12.0}}
    line = thresholds.verdict_line(summary, marks, [])
    assert line.endswith("everyone admitted exactly once, Kendall tau 1.0000 (>= 0.99), "
                         "0 late, ETA error p90 0% (<= 20%)")


def test_journeys_with_tabs_count_once() -> None:
    people = fair_run()
    people[2]["tabs"] = 3
    people[2]["registration_ids"] = ["r-k3"]  # three tabs, one registration
    figures = summary_of(people)["crush"]
    assert figures["with_three_tabs"] == 1
    assert figures["exactly_once"]["admitted_once"] == 10


def test_order_is_judged_on_the_admitted_with_a_place() -> None:
    people = [*fair_run(), journey("k0", None, 5.0)]  # admitted through the bucket
    figures = summary_of(people)["crush"]
    assert figures["admitted_without_a_place"] == 1
    assert figures["order"]["ranked"] == 10
    assert list(itertools.islice(figures["polls"]["latency_ms"].values(), 1)) == [3.0]


def test_the_progress_line_counts_places_in_line_and_polls() -> None:
    from loadtest.recorder import Recorder, progress_line

    recorder = Recorder()
    recorder.count("offered", 4, at=1.0)
    recorder.count("queued", 3, at=1.0)
    recorder.count("queue_polls", 7, at=2.0)
    assert progress_line(recorder, 5.0) == (
        "    5 s  offered 4  admitted 0  refused 0  p99 n/a  queued 3  polls 7")
