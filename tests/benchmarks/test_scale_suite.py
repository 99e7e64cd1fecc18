"""The scale suite: layouts, listening-socket counting, the table; a --tiny run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import scale
from benchmarks.harness import BenchRun
from benchmarks.scale import ScaleLayout
from tests.benchmarks import tiny

# /proc/net/tcp: two processes listen on 8080 (0x1F90), one on 8081; one connection to 8080.
PROC_NET_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   3: 0100007F:1F90 0100007F:C0A8 01 00000000:00000000 00:00000000 00000000     0
"""
PROC_NET_TCP6 = """  sl  local_address remote_address st
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0
"""


def test_listening_sockets_are_counted_per_port_over_both_tables() -> None:
    assert scale.listening_sockets(8080, [PROC_NET_TCP]) == 2
    assert scale.listening_sockets(8080, [PROC_NET_TCP, PROC_NET_TCP6]) == 3
    assert scale.listening_sockets(8081, [PROC_NET_TCP]) == 1
    assert scale.listening_sockets(9000, [PROC_NET_TCP]) == 0


@pytest.mark.parametrize(("cores", "layout"), [
    ([0], ScaleLayout(None, None, None)),
    ([0, 1], ScaleLayout((0,), (1,), (1,))),
    ([0, 1, 2, 3], ScaleLayout((0, 1), (2,), (3,))),
    (list(range(32)), ScaleLayout(tuple(range(16)), tuple(range(16, 31)), (31,))),
])
def test_the_doors_get_half_the_cores_and_redis_one_of_the_rest(
        cores: list[int], layout: ScaleLayout) -> None:
    assert ScaleLayout.for_cores(cores) == layout


def test_wrk_threads_follow_the_process_count_up_to_the_load_cores() -> None:
    layout = ScaleLayout.for_cores(list(range(32)))
    assert [layout.wrk_threads(n) for n in (1, 2, 16)] == [1, 2, 15]
    assert ScaleLayout.for_cores([0, 1]).wrk_threads(16) == 1


def test_admitted_per_minute_and_the_speedup_over_one_process(tmp_path: Path) -> None:
    assert scale.per_minute(1_000.0) == 60_000.0
    run = BenchRun("scale", tmp_path)
    for number, (one, two) in enumerate([(100.0, 150.0), (120.0, 250.0), (110.0, 200.0)], 1):
        for count, rate in ((1, one), (2, two)):
            run.record("door", number, {"processes": count}, requests_per_minute=rate * 60,
                       accepted_per_second=rate, p50_ms=1.0, p99_ms=2.0, door_cpu=1.0,
                       redis_us_per_admitted=9.0)
    figures = scale.by_processes(run, [1, 2])
    assert figures[2]["requests_per_minute"] == 12_000.0  # the median of three rounds
    text = scale.table(figures)
    assert "| 2 | 128 | 12,000 | 200 |" in text and "| 9.00 | 1.82 x |" in text


@pytest.mark.slow
def test_a_tiny_scale_run_measures_each_process_count_and_writes_its_results(
        tmp_path: Path) -> None:
    out = tmp_path / "scale"
    done = tiny.run_tiny("scale", out, timeout=90)
    assert "round 1/1: 2 door process(es)" in done.stderr  # progress is shown
    result = json.loads((out / "results.json").read_text())
    assert result["size"] == "tiny"
    counts = sorted(m["settings"]["processes"] for m in result["measurements"])
    assert counts == [1, 2]
    assert all(m["figures"]["requests_per_minute"] > 0 and m["figures"]["redis_cpu"] > 0
               for m in result["measurements"])
    [target] = result["targets"]
    assert target["goal"] == 2_000_000 and target["value"] > 0
    assert "at 2 processes" in target["name"]
    assert (out / "scale-requests-per-minute.png").stat().st_size > 1000
    markdown = (out / "results.md").read_text()
    assert "| door processes | connections | admitted/min |" in markdown
