"""`python -m benchmarks wave --tiny`: a small wave through the door and the whole stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import stack


def run_suite(folder: Path) -> dict[str, Any]:
    """Run the suite at --tiny into `folder`; its results.json."""
    done = subprocess.run([sys.executable, "-m", "benchmarks", "wave", "--tiny", "--out",
                           str(folder)], cwd=stack.REPO_ROOT, capture_output=True, text=True,
                          timeout=110, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads((folder / "results.json").read_text())
    return result


@pytest.mark.slow
def test_a_tiny_wave_is_admitted_stored_emailed_and_checked(tmp_path: Path) -> None:
    folder = tmp_path / "wave"
    results = run_suite(folder)
    summary = results["summary"]
    assert (results["suite"], results["size"]) == ("wave", "tiny")
    assert summary["failures"] == []
    assert summary["count"] == summary["admitted"] == summary["stored"] == 300
    assert summary["gave_up"] == summary["unexpected_answers"] == 0
    # Every answer is counted: one 202 per applicant, plus each refusal retried.
    assert summary["statuses"]["202"] == 300
    assert summary["refused_answers"] == sum(
        n for status, n in summary["statuses"].items() if status in ("429", "503"))
    # The last applicant arrives at ~3 s; nothing is done before it is stored.
    stored = summary["all_stored_s"]
    assert 2.5 < stored <= summary["all_emails_s"]
    assert stored <= summary["all_nik_checked_s"]
    timeline = summary["timeline"]
    for column in range(1, 6):
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
