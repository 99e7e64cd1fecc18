"""`python -m benchmarks wave --tiny`: a small wave through the door and the whole stack."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks import tiny


def run_suite(folder: Path, *options: str) -> dict[str, Any]:
    return tiny.results_of("wave", folder, *options, timeout=110)


@pytest.mark.slow
def test_a_tiny_wave_is_admitted_stored_emailed_and_checked(tmp_path: Path) -> None:
    folder = tmp_path / "wave"
    results = run_suite(folder)
    summary = results["summary"]
    assert (results["suite"], results["size"]) == ("wave", "tiny")
    assert summary["failures"] == []
    assert summary["count"] == summary["admitted"] == summary["stored"] == 300
    assert summary["unexpected_answers"] == 0
    # No failure answered for an admitted registration (each request's answer read
    # against its key's record).
    assert summary["refused_yet_admitted"] == 0
    assert all({"outcome_unknown", "refused_yet_admitted"} <= set(p) for p in summary["passes"])
    assert summary["admitted_without_202"] >= 0
    assert "failure answered for an admitted registration" in (folder / "results.md").read_text()
    # Every answer is counted: at least one 202 per applicant (a retry of one admitted
    # but unanswered is a replay, a 202 too), and each refusal was sent again.
    assert summary["statuses"]["202"] >= 300
    assert summary["refused_answers"] == sum(
        n for status, n in summary["statuses"].items() if status in ("429", "503"))
    assert summary["retried_applicants"] >= min(1, summary["refused_answers"])
    assert summary["passes"][0]["offered"] == 300
    # The last applicant arrives at ~3 s; nothing is done before it is stored.
    stored = summary["all_stored_s"]
    assert 2.5 < stored <= summary["all_emails_s"]
    assert stored <= summary["all_nik_checked_s"]
    timeline = summary["timeline"]
    for column in (1, 2, 3, 4):  # stored, emails, NIK checks, arrivals
        values = [point[column] for point in timeline]
        assert values == sorted(values)
    simulator = summary["simulator"]
    assert 1 <= simulator["max_per_second"] <= 550  # capacity 500 (a little bunching)
    [target] = results["targets"]
    assert target["value"] == stored
    assert (target["goal"], target["better"], target["met"]) == (90.0, "lower", True)
    assert results["plots"] == ["wave.png"]
    assert (folder / "wave.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (folder / "results.md").read_text()
    assert "| measure (from the first arrival) | value |" in text
    assert "all stored, seconds from the wave's start" in text


@pytest.mark.slow
def test_refused_applicants_are_sent_again_until_every_one_is_admitted(tmp_path: Path) -> None:
    # 300 arrive at 100/s; the door admits 40/s: most are refused at first.
    results = run_suite(tmp_path / "wave", "--admission-rate", "40")
    summary = results["summary"]
    assert summary["failures"] == []
    assert summary["answers_429"] > 100
    assert summary["retried_applicants"] > 100
    assert len(summary["passes"]) > 1
    # Each pass sends exactly those the previous one left unadmitted.
    assert summary["passes"][0]["offered"] == 300
    passes = summary["passes"]
    for earlier, later in itertools.pairwise(passes):
        assert later["offered"] == earlier["offered"] - earlier["admitted"]
    assert sum(p["admitted"] for p in passes) == 300
    assert passes[-1]["admitted"] == passes[-1]["offered"]
    assert summary["count"] == summary["admitted"] == summary["stored"] == 300
