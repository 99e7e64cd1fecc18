"""The verification-cpu suite at a small count: it runs end to end and reports every figure."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import stack


def test_the_suite_measures_each_process_of_a_small_backlog() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "verification-cpu", "--count", "300",
         "--timeout", "120"], cwd=stack.REPO_ROOT, capture_output=True, text=True,
        timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = Path(re.findall(r"results in (\S+)", done.stdout)[-1])
    results = json.loads((folder / "results.json").read_text())
    per_registration = results["cpu_us_per_registration"]
    # /proc counts in 10 ms ticks: at 300 registrations a quiet process can read 0.
    for process in ("email", "nik", "postgres", "redis", "mail-sink", "nik-sim"):
        assert per_registration[process] >= 0, process
    assert per_registration["email"] > 0 and per_registration["nik"] > 0
    assert results["verification_us_per_registration"] == pytest.approx(sum(
        per_registration[name] for name in ("email", "nik", "postgres", "redis")))
    assert set(results["per_s"]) == {"email", "nik"}
    assert results["most_pg_connections"]["gelombang-nik"] <= 2
    assert results["exit_codes"] == {name: 0 for name in results["exit_codes"]}
    assert "verification (email + nik + PostgreSQL + Redis)" in done.stdout
