"""The latency suite at --tiny: it runs end to end and writes what it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import tiny


@pytest.mark.slow
def test_the_tiny_latency_suite_writes_results_a_plot_and_the_target(tmp_path: Path) -> None:
    out = tmp_path / "latency"
    document = tiny.results_of("latency", out, timeout=60)
    assert document["suite"] == "latency"
    assert document["size"] == "tiny"
    # Every tiny rate was measured (and the knee search probed at least its two ends).
    rounds = [m for m in document["measurements"] if m["settings"]["kind"] == "round"]
    probes = [m for m in document["measurements"] if m["settings"]["kind"] == "knee"]
    assert {m["settings"]["rate"] for m in rounds} >= {50.0, 100.0}
    assert len(probes) >= 2
    for measurement in rounds:
        figures = measurement["figures"]
        # The door admits everything at these rates: every request answered 202.
        assert figures["offered"] == figures["completed"] == figures["accepted"] > 0
        assert figures["errors"] == figures["unfinished"] == 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["p999_ms"]
    [target] = document["targets"]
    assert target["name"] == "p99 of 202s at 50/s"
    assert (target["goal"], target["better"]) == (10.0, "lower")
    assert target["met"] == (target["value"] <= 10.0)
    assert document["summary"]["knee"]["text"]
    assert document["plots"] == ["latency.png"]
    assert (out / "latency.png").read_bytes().startswith(b"\x89PNG")
    markdown = (out / "results.md").read_text()
    assert "| 50/s |" in markdown and "p99 of 202s at 50/s" in markdown
    assert "![latency](latency.png)" in markdown
