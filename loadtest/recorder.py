"""What each Locust process saw, second by second, for the surge report.

Locust's own statistics are per request name; the report needs more: the
arrival rate (first tries only, not retries), admitted/limited/shed per
second, latency percentiles per second, and every registration id that got
a 202 (for the loss check), and in a waiting-room crush one journey per
registrant (`loadtest/waiting_room.py`). Each Locust process keeps a `Recorder`. A
worker sends what it recorded since its last message to the master every
second (`loadtest/relay.py`, over Locust's own connection, so workers on
other machines count too); the master, or a lone process, absorbs it and
writes the whole run as `<out>/<name>.json`, every few seconds and at the
end. The surge command adds up the files in the folder (`merge`).
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
                   "unexpected_5xx", "retries", "polls", "verified_links", "reads_unavailable",
                   "generator_full", "abandoned",
                   # the waiting room's (opening-crush)
                   "queued", "queue_polls", "queue_polls_refused", "turns", "tickets_used",
                   "rejoins", "invalid_tickets", "tabs")
# Per source (a Locust worker, or the lone process), the totals the report
# lists to show that every worker's applicants are in it.
SOURCE_TOTALS: Final = ("offered", "admitted")
# How the master's progress lines start in Locust's output, for the surge
# command to pick them out (this module, unlike relay.py, imports no Locust:
# its gevent monkey-patching must not reach the surge command's process).
PROGRESS_PREFIX: Final = "surge progress "
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
    # source → outcome → total: who sent what (filled by `absorb`).
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    # Whole milliseconds → 202s, for the progress line's p99 so far: a sort of
    # every latency each few seconds would grow with the run, this does not.
    histogram: dict[int, int] = field(default_factory=dict)
    # opening-crush: one record per registrant, made when they leave the page.
    journeys: list[dict[str, Any]] = field(default_factory=list)

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
        self._histogram([latency_ms])

    def journey(self, record: dict[str, Any]) -> None:
        """One registrant's way through the waiting room (JSON-ready, nothing personal)."""
        self.journeys.append(record)

    def _histogram(self, values: list[float]) -> None:
        for value in values:
            key = math.ceil(value)
            self.histogram[key] = self.histogram.get(key, 0) + 1

    def p99_so_far(self) -> float | None:
        """The p99 of every 202 recorded so far, to the millisecond above."""
        total = sum(self.histogram.values())
        if not total:
            return None
        rank, seen = math.ceil(0.99 * total), 0
        for key in sorted(self.histogram):
            seen += self.histogram[key]
            if seen >= rank:
                return float(key)
        return None  # unreachable: the last key reaches the total

    def data(self) -> dict[str, Any]:
        """Everything recorded, as JSON-ready values (a file, or a message to the master)."""
        return {"counts": {str(k): v for k, v in self.counts.items()},
                "latencies": {str(k): v for k, v in self.latencies.items()},
                "admitted_ids": self.admitted_ids, "statuses": self.statuses,
                "sources": self.sources, "journeys": self.journeys}

    def take(self) -> dict[str, Any]:
        """What was recorded since the last take, and start afresh (a worker's message)."""
        data = self.data()
        self.counts, self.latencies = defaultdict(dict), defaultdict(list)
        self.admitted_ids, self.statuses, self.histogram = [], {}, {}
        self.journeys = []
        return data

    def absorb(self, data: dict[str, Any], source: str | None = None) -> None:
        """Add another recorder's data (a worker's message, or a file)."""
        _add(self.counts, self.latencies, self.admitted_ids, self.statuses, data)
        self.journeys.extend(data.get("journeys", ()))
        for values in data["latencies"].values():
            self._histogram(values)
        for name, totals in data.get("sources", {}).items():
            _add_totals(self.sources.setdefault(name, {}), totals)
        if source is not None:
            totals = {outcome: sum(bucket.get(outcome, 0) for bucket in data["counts"].values())
                      for outcome in SOURCE_TOTALS}
            _add_totals(self.sources.setdefault(source, {}), totals)

    def total(self, outcome: str) -> int:
        return sum(bucket.get(outcome, 0) for bucket in self.counts.values())

    def write(self, folder: Path, name: str | None = None) -> None:
        """Replace this recorder's file (written whole, then renamed)."""
        name = name or f"process-{os.getpid()}"
        part = folder / f".{name}.json.part"
        part.write_text(json.dumps(self.data()))
        os.replace(part, folder / f"{name}.json")


@dataclass
class Merged:
    """Every process's record, added up."""

    counts: dict[int, dict[str, int]]
    latencies: dict[int, list[float]]
    admitted_ids: list[str]
    statuses: dict[str, int]
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    journeys: list[dict[str, Any]] = field(default_factory=list)

    def total(self, outcome: str) -> int:
        return sum(bucket.get(outcome, 0) for bucket in self.counts.values())

    def all_latencies(self) -> list[float]:
        return sorted(value for values in self.latencies.values() for value in values)


def merge(folder: Path) -> Merged:
    """Add up the record files in the folder (one per master or lone process)."""
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    latencies: dict[int, list[float]] = defaultdict(list)
    ids: list[str] = []
    statuses: dict[str, int] = {}
    sources: dict[str, dict[str, int]] = {}
    journeys: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")):
        data: dict[str, Any] = json.loads(path.read_text())
        _add(counts, latencies, ids, statuses, data)
        journeys.extend(data.get("journeys", ()))
        for name, totals in data.get("sources", {}).items():
            _add_totals(sources.setdefault(name, {}), totals)
    return Merged(dict(counts), dict(latencies), ids, statuses, sources, journeys)


def _add(counts: dict[int, dict[str, int]], latencies: dict[int, list[float]],
         ids: list[str], statuses: dict[str, int], data: dict[str, Any]) -> None:
    for second, bucket in data["counts"].items():
        _add_totals(counts[int(second)], bucket)
    for second, values in data["latencies"].items():
        latencies[int(second)].extend(values)
    ids.extend(data["admitted_ids"])
    _add_totals(statuses, data["statuses"])


def _add_totals(target: dict[str, int], more: dict[str, int]) -> None:
    for key, n in more.items():
        target[key] = target.get(key, 0) + n


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return None
    index = min(len(values) - 1, max(0, math.ceil(share * len(values)) - 1))
    return values[index]


def progress_line(recorder: Recorder, elapsed: float) -> str:
    """`12 s  offered 240  admitted 230  refused 10  p99 45 ms` (nothing personal), and
    in the waiting room `queued` (answers that gave a place) and `polls` (of tickets)."""
    refused = recorder.total("limited") + recorder.total("shed")
    p99 = recorder.p99_so_far()
    line = (f"{elapsed:5.0f} s  offered {recorder.total('offered'):,}  admitted "
            f"{recorder.total('admitted'):,}  refused {refused:,}  p99 "
            f"{'n/a' if p99 is None else f'{p99:,.0f} ms'}")
    queued = recorder.total("queued")
    if queued:
        line += f"  queued {queued:,}  polls {recorder.total('queue_polls'):,}"
    return line
