"""The per-registration figures a capacity plan rests on: what they are, where each came from.

The benchmark suites keep what they measured in a `figures.json` beside their
`results.json` (`write_figures`); `gelombang plan` reads the newest figure of
each name under the results folder (`load_figures`), and falls back, figure
by figure, to the values measured on the 2-core development VM that
docs/benchmarks.md quotes (`DEFAULTS`), each named as a default with its page.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

FIGURES_FILE: Final = "figures.json"
RESULTS_FOLDER: Final = Path(__file__).resolve().parents[1] / "benchmarks" / "results"

# The README's full run (`gelombang bench`, 2026-12-03 15:57 UTC) and the
# verification runs of 2026-12-06: every default comes from one of the two,
# so the defaults describe one code base on one machine.
FULL_RUN: Final = "docs/performance/results-2026-12-03c.md"
VERIFICATION_RUN: Final = "docs/performance/verification-2026-12-06.md"


@dataclass(frozen=True)
class FigureSpec:
    """One figure: its unit, the suite that measures it, and its documented default."""

    name: str
    unit: str
    suite: str
    default: float
    default_source: str


SPECS: Final[tuple[FigureSpec, ...]] = (
    FigureSpec("door_cpu_us", "µs of door CPU per admitted registration", "door", 199.1,
               f"{FULL_RUN} (door: 0.95 cores / 4,771 2xx/s at 64 connections)"),
    FigureSpec("admission_redis_cpu_us", "µs of Redis CPU per admitted registration", "scale",
               21.9, f"{FULL_RUN} (scale: 1 door process)"),
    FigureSpec("drain_worker_cpu_us", "µs of drain worker CPU per stored registration",
               "drain", 13.0, f"{FULL_RUN} (drain: 1,000,000, 1 worker process)"),
    FigureSpec("drain_postgres_cpu_us", "µs of PostgreSQL CPU per stored registration",
               "drain", 26.0, f"{FULL_RUN} (drain)"),
    FigureSpec("drain_redis_cpu_us", "µs of Redis CPU per stored registration", "drain",
               12.0, f"{FULL_RUN} (drain)"),
    FigureSpec("drain_partition_rows_per_s", "registrations stored per second per partition",
               "drain", 4216.0, f"{FULL_RUN} (drain: 33,730 rows/s over 8 partitions)"),
    FigureSpec("email_worker_cpu_us", "µs of email worker CPU per email sent",
               "verification-cpu", 192.0, f"{VERIFICATION_RUN} (both verifiers, 30,000)"),
    FigureSpec("nik_worker_cpu_us", "µs of NIK worker CPU per NIK checked",
               "verification-cpu", 183.0, f"{VERIFICATION_RUN} (both verifiers, 30,000)"),
    FigureSpec("verification_postgres_cpu_us",
               "µs of PostgreSQL CPU per registration verified both ways", "verification-cpu",
               103.0, f"{VERIFICATION_RUN} (both verifiers)"),
    FigureSpec("verification_redis_cpu_us",
               "µs of Redis CPU per registration verified both ways", "verification-cpu",
               33.0, f"{VERIFICATION_RUN} (both verifiers)"),
    FigureSpec("redis_bytes_queued", "Redis bytes per registration queued through the door "
               "with an Idempotency-Key", "memory", 322.4, f"{FULL_RUN} (memory)"),
    FigureSpec("redis_bytes_after_drain", "Redis bytes per registration left after the drain "
               "(jobs, markers, idempotency records)", "memory", 69.1, f"{FULL_RUN} (memory)"),
    FigureSpec("postgres_bytes_per_row", "PostgreSQL bytes per stored registration "
               "(registrations + indexes + other worker tables)", "memory", 497.0,
               f"{FULL_RUN} (memory: 479 + 18)"),
    FigureSpec("door_rss_mib", "MiB of resident memory per door process (peak)", "memory",
               72.1, f"{FULL_RUN} (memory: after 20,000 registrations)"),
)
SPEC_BY_NAME: Final = {spec.name: spec for spec in SPECS}


@dataclass(frozen=True)
class Figure:
    """A figure's value and where it came from."""

    name: str
    value: float
    measured: bool  # False: the documented default, not a figure of this machine's runs
    source: str

    @property
    def unit(self) -> str:
        return SPEC_BY_NAME[self.name].unit


class FiguresError(Exception):
    """A figures.json that cannot be read as one."""


def write_figures(folder: Path, suite: str, figures: Mapping[str, float],
                  machine: Mapping[str, Any], measured_at: str) -> Path | None:
    """Keep a suite's per-registration figures beside its results.json (nothing if none)."""
    unknown = set(figures) - set(SPEC_BY_NAME)
    if unknown:
        raise ValueError(f"not a capacity figure: {', '.join(sorted(unknown))}")
    if not figures:
        return None
    path = folder / FIGURES_FILE
    document = {"suite": suite, "measured_at": measured_at, "machine": dict(machine),
                "results": "results.json",
                "figures": {name: float(value) for name, value in figures.items()}}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def read_figures_file(path: Path) -> dict[str, Any]:
    """One figures.json, checked: every figure known and a number."""
    try:
        document = json.loads(path.read_text())
        figures = document["figures"]
        measured_at = str(document["measured_at"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FiguresError(f"{path}: not a figures file ({exc})") from exc
    if not isinstance(figures, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in figures.values()):
        raise FiguresError(f"{path}: figures must be numbers by name")
    return {"suite": document.get("suite", "?"), "measured_at": measured_at,
            "machine": document.get("machine", {}),
            "figures": {k: float(v) for k, v in figures.items() if k in SPEC_BY_NAME}}


def load_figures(results: Path | None) -> dict[str, Figure]:
    """Every figure: the newest measured under `results`, else its documented default.

    `results` None means defaults only. A suite writes figures.json in its own
    folder, which `gelombang bench` puts one level down, so two levels are read.
    """
    found: dict[str, tuple[str, Figure]] = {}
    paths = [] if results is None or not results.is_dir() else sorted(
        [*results.glob(f"*/{FIGURES_FILE}"), *results.glob(f"*/*/{FIGURES_FILE}")])
    for path in paths:
        document = read_figures_file(path)
        machine = document["machine"]
        where = (f"{path} ({document['suite']}, {document['measured_at']}, "
                 f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores)")
        for name, value in document["figures"].items():
            # ISO 8601 UTC stamps order as strings; the newest run wins.
            if name not in found or document["measured_at"] >= found[name][0]:
                found[name] = (document["measured_at"], Figure(name, value, True, where))
    return {spec.name: found[spec.name][1] if spec.name in found else
            Figure(spec.name, spec.default, False, f"default: {spec.default_source}")
            for spec in SPECS}
