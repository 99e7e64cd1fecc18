"""What each Locust process saw, second by second, for the surge report.

Locust's own statistics are per request name; the report needs more: the
arrival rate (first tries only, not retries), admitted/limited/shed per
second, latency percentiles per second, and every registration id that got
a 202 (for the loss check). Each Locust process keeps a `Recorder` and
writes it as `<out>/process-<pid>.json`, every few seconds and at exit; the
surge command merges the files (`merge`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

OUTCOMES: Final = ("offered", "admitted", "limited", "shed", "rejected", "errors",
                   "unexpected_5xx", "retries", "polls", "verified_links", "reads_unavailable")
# 503 codes the contract documents (each with Retry-After): expected under load.
DOCUMENTED_503: Final = frozenset({"backlog_full", "queue_unavailable", "intake_closed",
                                   "status_unavailable", "outcome_unknown"})


@dataclass
class Recorder:
    """Counts per wall-clock second, 202 latencies per second, admitted ids."""

    counts: dict[int, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    latencies: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    admitted_ids: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str, n: int = 1, at: float | None = None) -> None:
        second = int(at if at is not None else time.time())
        bucket = self.counts[second]
        bucket[outcome] = bucket.get(outcome, 0) + n

    def status(self, code: int) -> None:
        key = str(code)
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def admitted(self, registration_id: str, latency_ms: float, at: float) -> None:
        self.count("admitted", at=at)
        self.latencies[int(at)].append(round(latency_ms, 2))
        self.admitted_ids.append(registration_id)

    def write(self, folder: Path) -> None:
        """Replace this process's file (written whole, then renamed)."""
        data = {"counts": {str(k): v for k, v in self.counts.items()},
                "latencies": {str(k): v for k, v in self.latencies.items()},
                "admitted_ids": self.admitted_ids, "statuses": self.statuses}
        target = folder / f"process-{os.getpid()}.json"
        part = folder / f".process-{os.getpid()}.json.part"
        part.write_text(json.dumps(data))
        os.replace(part, target)


@dataclass
class Merged:
    """Every process's record, added up."""

    counts: dict[int, dict[str, int]]
    latencies: dict[int, list[float]]
    admitted_ids: list[str]
    statuses: dict[str, int]

    def total(self, outcome: str) -> int:
        return sum(bucket.get(outcome, 0) for bucket in self.counts.values())

    def all_latencies(self) -> list[float]:
        return sorted(value for values in self.latencies.values() for value in values)


def merge(folder: Path) -> Merged:
    """Add up the `process-*.json` files in the folder."""
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    latencies: dict[int, list[float]] = defaultdict(list)
    ids: list[str] = []
    statuses: dict[str, int] = {}
    for path in sorted(folder.glob("process-*.json")):
        data: dict[str, Any] = json.loads(path.read_text())
        for second, bucket in data["counts"].items():
            target = counts[int(second)]
            for outcome, n in bucket.items():
                target[outcome] = target.get(outcome, 0) + n
        for second, values in data["latencies"].items():
            latencies[int(second)].extend(values)
        ids.extend(data["admitted_ids"])
        for code, n in data["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    return Merged(dict(counts), dict(latencies), ids, statuses)


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return None
    index = min(len(values) - 1, max(0, math.ceil(share * len(values)) - 1))
    return values[index]
