"""`python -m benchmarks drain --tiny`: COPY and drain alternate; checks reach the results."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks import tiny


def run_suite(folder: Path, *options: str) -> dict[str, Any]:
    return tiny.results_of("drain", folder, *options, timeout=100)


@pytest.mark.slow
def test_two_rounds_alternate_copy_and_drain_and_store_every_registration(
        tmp_path: Path) -> None:
    folder = tmp_path / "drain"
    results = run_suite(folder, "--rounds", "2")
    assert (results["suite"], results["size"]) == ("drain", "tiny")
    assert results["parameters"]["count"] == 2_000
    # Each round takes both COPY runs, then the drain, then the streams alone.
    assert [(m["round"], m["contender"]) for m in results["measurements"]] == [
        (number, name) for number in (1, 2)
        for name in ("raw COPY, 1 connection", "raw COPY, 2 connections", "drain",
                     "streams only")]
    assert all(m["figures"]["rows_per_second"] > 0 for m in results["measurements"])
    summary = results["summary"]
    assert summary["failures"] == []
    for result in summary["rounds"]:
        found, expected = result["found"], result["expected"]
        assert found["rows"] == found["funnel_stored"] == 2_000
        assert found["state_accepted"] == expected["accepted"]
        assert expected["accepted"] + expected["duplicates"] == 2_000
        assert expected["duplicates"] == 40  # every 50th reuses a NIK
        copies = [p["rows_per_second"] for p in result["phases"][:2]]
        assert result["ratio"] == pytest.approx(result["phases"][2]["rows_per_second"]
                                                / max(copies))
        # The drain's progress ends with every row drained.
        assert result["drain_timeline"][-1][1] == 2_000
        # The floor read every entry, and its bound adds its CPU to the COPY's.
        least = result["phases"][3]
        assert (least["kind"], least["rows"]) == ("floor", 2_000)
        limit = result["bound"]
        assert limit["at_copy_busy_share"] == pytest.approx(
            limit["copy_cpu_us"] / (limit["copy_cpu_us"] + limit["floor_cpu_us"]))
        # 0 when the tiny COPY of 2,000 rows took under one clock tick (10 ms) of
        # PostgreSQL's CPU by /proc (a full suite's run once read it so).
        assert 0 <= limit["at_copy_busy_share"] < 1
    [target] = results["targets"]
    assert target["value"] == pytest.approx(
        statistics.median(r["ratio"] for r in summary["rounds"]))
    assert (target["goal"], target["better"]) == (0.6, "higher")
    assert results["plots"] == ["drain.png"]
    assert (folder / "drain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (folder / "results.md").read_text()
    assert "| round | raw COPY, 1 connection, rows/s |" in text
    assert "checks: all passed" in text
    assert "drain rows/s / raw COPY ceiling" in text
    assert "| Redis command, floor | calls |" in text
