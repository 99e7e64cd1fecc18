"""The door suite: wrk parsing, layouts, ratios and the nginx config; a --tiny run end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import door
from benchmarks.baselines import nginx
from benchmarks.door import AIOHTTP, DOOR, NAIVE, NGINX, Layout, WrkResult, parse_wrk
from tests.benchmarks import tiny

# Debian's wrk 4.1, as captured against the plain aiohttp baseline.
WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:45123
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   313.55us  380.68us   5.65ms   96.46%
    Req/Sec    15.12k     3.59k   18.17k    81.82%
  Latency Distribution
     50%  216.00us
     75%  295.00us
     90%  367.00us
     99%    2.49ms
  16521 requests in 1.10s, 3.80MB read
Requests/sec:  15018.07
Transfer/sec:      3.45MB
"""

WRK_WITH_ERRORS = """Running 1m test @ http://127.0.0.1:8080
  2 threads and 256 connections
  Latency Distribution
     50%   20.49ms
     75%   25.00ms
     90%   27.00ms
     99%    1.02s
  120000 requests in 1.00m, 30.00MB read
  Socket errors: connect 3, read 4, write 0, timeout 5
  Non-2xx or 3xx responses: 20000
Requests/sec:   2000.00
Transfer/sec:    512.00KB
"""


def test_wrk_output_is_parsed_into_counts_rates_and_milliseconds() -> None:
    found = parse_wrk(WRK_OUTPUT)
    assert found == WrkResult(requests=16521, seconds=1.1, requests_per_second=15018.07,
                              p50_ms=found.p50_ms, p99_ms=2.49, non_2xx=0, socket_errors=0)
    assert found.p50_ms == pytest.approx(0.216)
    assert found.accepted_per_second == pytest.approx(16521 / 1.1)


def test_non_2xx_answers_and_socket_errors_are_counted_and_not_accepted() -> None:
    found = parse_wrk(WRK_WITH_ERRORS)
    assert (found.seconds, found.p50_ms, found.p99_ms) == (60.0, 20.49, 1020.0)
    assert (found.non_2xx, found.socket_errors) == (20000, 12)
    assert found.accepted_per_second == pytest.approx(100_000 / 60)


def test_output_without_a_latency_distribution_is_refused() -> None:
    with pytest.raises(ValueError, match="50%"):
        parse_wrk(WRK_OUTPUT.replace("     50%  216.00us\n", ""))


@pytest.mark.parametrize(("cores", "layout"), [
    ([0], Layout(None, None, None)),
    ([0, 1], Layout((0,), (1,), (1,))),
    ([0, 1, 2], Layout((0,), (1,), (2,))),
    ([0, 1, 2, 3], Layout((0,), (1,), (2, 3))),
    ([0, 1, 2, 3, 4], Layout((0,), (1, 2), (3, 4))),
])
def test_the_server_keeps_a_core_of_its_own(cores: list[int], layout: Layout) -> None:
    assert Layout.for_cores(cores) == layout


def test_the_mean_group_is_taken_between_two_readings() -> None:
    assert door.mean_group((100.0, 10.0), (400.0, 20.0)) == 30.0
    assert door.mean_group((100.0, 10.0), (100.0, 10.0)) is None
    assert door.mean_group(None, (1.0, 1.0)) is None


def _medians(door_rps: float) -> dict[str, dict[str, float]]:
    figures = {NGINX: 40_000.0, AIOHTTP: 8_000.0, DOOR: door_rps, NAIVE: 1_000.0}
    return {f"{name} @ {count}": {"accepted_per_second": rps * (1 if count == 64 else 0.5),
                                  "p50_ms": 1.0, "p99_ms": 2.0, "server_cpu": 1.0,
                                  "non_2xx": 0.0}
            for name, rps in figures.items() for count in (64, 256)}


def test_ratios_are_the_doors_rate_over_each_other_contenders_per_connection_count() -> None:
    found = door.ratios(_medians(4_000.0), [64, 256])
    assert found[64] == {NGINX: 0.1, AIOHTTP: 0.5, NAIVE: 4.0}
    assert found[256] == found[64]


def test_the_table_has_a_row_per_contender_and_connection_count_with_the_ratios() -> None:
    medians = _medians(4_000.0)
    medians[f"{NAIVE} @ 256"]["non_2xx"] = 12.0
    text = door.table(medians, [64, 256], door.ratios(medians, [64, 256]))
    rows = [line for line in text.splitlines()[2:] if line]
    assert len(rows) == 8
    assert "| gelombang door | 64 | 4,000 |" in text
    assert "0.50 x plain aiohttp" in text and "4.00 x naive FastAPI + INSERT" in text
    assert "12 non-2xx" in text


def test_the_naive_baseline_checks_its_input_with_pydantic() -> None:
    from pydantic import ValidationError

    from benchmarks.baselines.naive_fastapi import Registration

    good = {"nik": "3201014506990001", "full_name": "A B", "email": "a@example.com",
            "phone": "081234567890", "birth_date": "1999-06-05", "consent": True}
    assert Registration.model_validate(good).nik == good["nik"]
    with pytest.raises(ValidationError):
        Registration.model_validate(good | {"nik": "12345"})


@pytest.mark.skipif(nginx.binary() is None, reason="nginx not installed (make sysdeps)")
def test_the_nginx_config_is_accepted_by_nginx_and_keeps_to_its_folder(tmp_path: Path) -> None:
    config = nginx.write_config(tmp_path / "nginx", 18080)
    text = config.read_text()
    assert "daemon off;" in text and "worker_processes 1;" in text
    assert "return 202" in text and "listen 127.0.0.1:18080" in text
    paths = [word.rstrip(";") for word in text.split()
             if word.startswith("/") and word != "/v1/registrations"]
    assert len(paths) >= 7  # pid, error log, five temp folders
    assert all(path.startswith(str(tmp_path)) for path in paths), paths
    checked = subprocess.run([*nginx.command(config), "-t"], capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.slow
def test_a_tiny_door_run_measures_every_contender_and_writes_its_results(
        tmp_path: Path) -> None:
    out = tmp_path / "door"
    done = tiny.run_tiny("door", out, timeout=90)
    assert "round 1/1: gelombang door" in done.stderr  # progress is shown
    result = json.loads((out / "results.json").read_text())
    assert result["size"] == "tiny"
    seen = {(m["contender"], m["settings"]["connections"]): m["figures"]
            for m in result["measurements"]}
    assert set(seen) == {(name, count) for name in (NGINX, AIOHTTP, DOOR, NAIVE)
                         for count in (4, 16)}
    assert all(figures["accepted_per_second"] > 0 for figures in seen.values())
    assert {t["name"] for t in result["targets"]} == {
        f"door / {other} at {count} connections"
        for other in ("plain aiohttp", "naive FastAPI + INSERT") for count in (4, 16)} | {
        f"door CPU per admitted registration at {count} connections" for count in (4, 16)}
    assert result["plots"] == ["door-requests-per-second.png"]
    assert (out / "door-requests-per-second.png").stat().st_size > 1000
    markdown = (out / "results.md").read_text()
    assert "| contender | connections | 2xx/s |" in markdown
    assert f"| {NAIVE} | 16 |" in markdown


def test_the_door_cpu_per_admitted_registration_is_its_cpu_share_over_its_2xx_rate() -> None:
    medians = {f"{door.DOOR} @ 64": {"accepted_per_second": 8_000.0, "server_cpu": 0.96},
               f"{door.AIOHTTP} @ 64": {"accepted_per_second": 20_000.0, "server_cpu": 0.99}}
    assert door.door_cpu_us(medians, 64) == pytest.approx(120.0)
    assert door.door_cpu_us(medians, 256) is None  # not measured at that count
    assert door.door_cpu_us({f"{door.DOOR} @ 64": {"accepted_per_second": 0.0,
                                                   "server_cpu": 0.5}}, 64) is None
