"""Running one benchmark suite at `--tiny` in its own process, as `gelombang bench` does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import stack


def run_tiny(suite: str, folder: Path, *options: str,
             timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m benchmarks SUITE --tiny --out FOLDER [OPTIONS]`, which must exit 0."""
    done = subprocess.run([sys.executable, "-m", "benchmarks", suite, "--tiny", "--out",
                           str(folder), *options], cwd=stack.REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def results_of(suite: str, folder: Path, *options: str, timeout: float) -> dict[str, Any]:
    """Run the suite at --tiny into `folder`; the results.json it wrote."""
    run_tiny(suite, folder, *options, timeout=timeout)
    found: dict[str, Any] = json.loads((folder / "results.json").read_text())
    return found
