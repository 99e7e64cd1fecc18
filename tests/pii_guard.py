"""A pytest plugin: no personal data in any log line of the test run.

Every log record of the test process (at INFO, production's level) goes to
`logs/in-process.log` in the run's folder, beside the servers' logs; the
processes tests start (door processes, dev stacks) write theirs under the run's
temporary folders. At the end of the session every `*.log` file of both places
is scanned for things shaped like a NIK, a phone number or a test registrant's
email (tests/pii.py), and a single hit fails the run, naming files and counts,
never values. Names have no shape: tests/test_data_protection.py looks for the
exact submitted values, names included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pii import shaped_hits

IN_PROCESS_LOG = "in-process.log"


def scan_logs(folders: list[Path], pattern: str = "*.log") -> dict[str, dict[str, int]]:
    """Hits by log file (relative name) and kind; only files with a hit."""
    found: dict[str, dict[str, int]] = {}
    for folder in folders:
        for path in sorted(folder.rglob(pattern)):
            if not path.is_file():
                continue
            counts: dict[str, int] = {}
            for number, line in enumerate(path.read_bytes().splitlines(), 1):
                for kind, n in shaped_hits(line).items():
                    if n:
                        # The line number, to find it; never the line.
                        counts[f"{kind} (line {number})"] = n
            if counts:
                found[str(path.relative_to(folder))] = counts
    return found


@pytest.fixture(scope="session", autouse=True)
def no_personal_data_in_logs(run_dir: Path,
                             tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Record the run's log lines, then fail the run if any carries personal data."""
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / IN_PROCESS_LOG)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.setLevel(min(level or logging.WARNING, logging.INFO))
    root.addHandler(handler)
    yield
    root.removeHandler(handler)
    handler.close()
    root.setLevel(level)
    found = scan_logs([logs, tmp_path_factory.getbasetemp()])
    if found:
        pytest.fail(f"personal data in log lines (file: kind: count): {found}", pytrace=False)
