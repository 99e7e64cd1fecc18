"""Prometheus metrics of the door, correct across its processes.

`gelombang serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder before it
starts the door processes, so every process writes its samples there and any
of them can answer a scrape for the whole group. Without that variable (a
single in-process door, as in some tests) the default registry is used.

The hot path counts in plain Python integers (`LocalCounter`,
`LocalHistogram`), not with prometheus-client: each of its calls takes a lock
and, in multiprocess mode, writes to a memory-mapped file. `flush()` adds what
was counted to the Prometheus children: before every scrape this process
answers and every report it writes (so those are exact), and every
FLUSH_SECONDS (so a sibling door process's scrape is at most that far behind
this one), and once more when the door stops. Every metric's name, labels
and values are those of a prometheus-client call per event. The door runs on
one event loop's thread; the counts are not meant to be bumped from others.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from queueing.admission import AdmissionPolicy, Outcome
from queueing.breaker_reports import BreakerReport
from queueing.grouping import GroupStats
from queueing.line_view import LineView
from queueing.redis_memory import NodeMemory

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# How stale a sibling door process's counts may be in a scrape (multiprocess
# mode); each flush costs a few prometheus-client calls per series counted since.
FLUSH_SECONDS: Final = 1.0

REQUEST_SECONDS = Histogram(
    "gelombang_http_request_duration_seconds",
    "Request latency by route and status; its _count is requests by route and status.",
    ["route", "status"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DECISIONS = Counter(
    "gelombang_admission_decisions_total",
    "Admission outcomes: admitted, replayed, limited, backlog_full, closed, unavailable,"
    " unknown (sent, and Redis did not say what it did in time), overloaded.",
    ["outcome"],
)
GROUP_SIZE = Histogram(
    "gelombang_admission_group_size",
    "Registrations decided in one Redis round trip.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
REDIS_SECONDS = Histogram(
    "gelombang_redis_round_trip_seconds",
    "Duration of one admission round trip to Redis.",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)

_EMAIL_VERIFIED = Counter(
    "gelombang_email_verified_total",
    "Verification links that verified an address (the first opening of each; the funnel's"
    " email_verified).",
)


class LocalCounter:
    """A counter child's increments kept in an int until `flush()` adds them to it."""

    __slots__ = ("_child", "_pending")

    def __init__(self, child: Counter) -> None:
        self._child = child
        self._pending = 0
        _LOCAL.append(self)

    def inc(self, amount: int = 1) -> None:
        """Count `amount` more (the hot path: one integer addition)."""
        self._pending += amount

    def flush(self) -> None:
        """Add what was counted since the last flush to the Prometheus child."""
        if self._pending:
            pending, self._pending = self._pending, 0
            self._child.inc(pending)


class LocalHistogram:
    """A histogram child's observations kept as bucket counts and a sum until `flush()`."""

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        # The child's own upper bounds, +Inf last, so each index is its bucket's.
        self._bounds = tuple(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        _LOCAL.append(self)

    def observe(self, value: float) -> None:
        """Record one observation: the first bucket whose bound is >= value, as the child."""
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> None:
        """Add the buckets and the sum since the last flush to the Prometheus child."""
        counts = self._counts
        if not any(counts):
            return
        # prometheus-client keeps one value per bucket (made cumulative when
        # collected) and one for the sum: what observe() would have added,
        # in one call each (tests/intake/test_metrics.py compares the two).
        buckets = self._child._buckets
        for index, count in enumerate(counts):
            if count:
                buckets[index].inc(count)
                counts[index] = 0
        total, self._sum = self._sum, 0.0
        self._child._sum.inc(total)


# Every local count of this process, in the order made; flush() empties them all.
_LOCAL: list[LocalCounter | LocalHistogram] = []


def flush() -> None:
    """Add every count made since the last flush to prometheus-client."""
    for local in _LOCAL:
        local.flush()


async def flush_every(seconds: float = FLUSH_SECONDS) -> None:
    """Flush every `seconds` until cancelled (a door's background task), and once at the end."""
    try:
        while True:
            await asyncio.sleep(seconds)
            flush()
    finally:
        flush()


_OUTCOME_NAMES: Mapping[Outcome, str] = {
    Outcome.ADMITTED: "admitted",
    Outcome.REPLAYED: "replayed",
    Outcome.LIMITED: "limited",
    Outcome.BACKLOG_FULL: "backlog_full",
    Outcome.CLOSED: "closed",
}
_DECISION_COUNTERS = {outcome: LocalCounter(DECISIONS.labels(name))
                      for outcome, name in _OUTCOME_NAMES.items()}
# Also a request shed unsent while a lost reply is found out (answered 503
# queue_unavailable, as the round trips Redis refused).
UNAVAILABLE = LocalCounter(DECISIONS.labels("unavailable"))
_UNKNOWN = LocalCounter(DECISIONS.labels("unknown"))
OVERLOADED = LocalCounter(DECISIONS.labels("overloaded"))
EMAIL_VERIFIED = LocalCounter(_EMAIL_VERIFIED)
_GROUP_SIZE = LocalHistogram(GROUP_SIZE)
_REDIS_SECONDS = LocalHistogram(REDIS_SECONDS)
# Per (route, status): shared by every RequestTimer of the process, as the children are.
_REQUESTS: dict[tuple[str, int], LocalHistogram] = {}


class RequestTimer:
    """Latency observations by route and status, counted locally (see flush)."""

    __slots__ = ("_children",)

    def __init__(self) -> None:
        self._children = _REQUESTS

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        local = self._children.get((route, status))
        if local is None:
            local = LocalHistogram(REQUEST_SECONDS.labels(route, str(status)))
            self._children[(route, status)] = local
        local.observe(seconds)


def observe_group(stats: GroupStats) -> None:
    """Record one admission round trip and its decisions."""
    _GROUP_SIZE.observe(stats.size)
    _REDIS_SECONDS.observe(stats.seconds)
    decisions = stats.decisions or []
    # Fewer decisions than requests: Redis, or some cluster nodes, failed for
    # the rest; of those, `unknown` may have been queued all the same.
    if stats.unknown:
        _UNKNOWN.inc(stats.unknown)
    if len(decisions) + stats.unknown < stats.size:
        UNAVAILABLE.inc(stats.size - len(decisions) - stats.unknown)
    counts: dict[Outcome, int] = {}
    for decision in decisions:
        counts[decision.outcome] = counts.get(decision.outcome, 0) + 1
    for outcome, count in counts.items():
        _DECISION_COUNTERS[outcome].inc(count)


def door_counters() -> dict[str, float]:
    """This process's own counters, for its report to Redis (queueing/process_reports.py).

    Read from the Prometheus children after a flush, so reporting adds
    nothing per request; with PROMETHEUS_MULTIPROC_DIR each child holds this
    process's value only.
    """
    flush()
    counters = {name: 0.0 for name in (*_OUTCOME_NAMES.values(), "unavailable", "unknown",
                                        "overloaded")}
    for family in DECISIONS.collect():
        for sample in family.samples:
            if sample.name == "gelombang_admission_decisions_total":
                counters[sample.labels["outcome"]] = sample.value
    for family in _EMAIL_VERIFIED.collect():
        for sample in family.samples:
            if sample.name == "gelombang_email_verified_total":
                counters["email_verified"] = sample.value
    return counters


@dataclass(frozen=True)
class QueueSnapshot:
    """What the scrape read from Redis; empty when Redis did not answer in time."""

    backlog: Mapping[int, int] = field(default_factory=dict)
    dead_letters: Mapping[int, int] = field(default_factory=dict)
    breakers: Sequence[BreakerReport] = ()
    redis_memory: Sequence[NodeMemory] = ()
    # The waiting room's line in force, as this door last read it (no Redis call of
    # the scrape's own): wave, and its figures by gauge name.
    line: tuple[str, Mapping[str, float]] | None = None


class _Snapshot(Collector):
    """Gauges read at scrape time from Redis and the live policy."""

    def __init__(self, queues: QueueSnapshot, policy: AdmissionPolicy) -> None:
        self._queues = queues
        self._policy = policy

    def collect(self) -> Iterable[Metric]:
        for name, text, values in (
            ("gelombang_backlog_entries",
             "Admitted registrations not yet stored, per partition.", self._queues.backlog),
            ("gelombang_dead_letters",
             "Entries in each partition's dead-letter stream (registrations and jobs).",
             self._queues.dead_letters),
        ):
            family = GaugeMetricFamily(name, text, labels=["partition"])
            for partition, entries in sorted(values.items()):
                family.add_metric([str(partition)], entries)
            yield family
        breakers = GaugeMetricFamily(
            "gelombang_breaker_open",
            "1 while a worker's circuit breaker holds calls back (open or half-open), per"
            " worker that reported in the last seconds.",
            labels=["service", "worker"],
        )
        for report in self._queues.breakers:
            breakers.add_metric([report.service, report.worker], float(report.is_open))
        yield breakers
        used = GaugeMetricFamily(
            "gelombang_redis_used_memory_bytes",
            "Memory Redis uses (INFO used_memory), per server or cluster master.",
            labels=["node"])
        limit = GaugeMetricFamily(
            "gelombang_redis_maxmemory_bytes",
            "Redis's maxmemory: past it every write is refused (noeviction); 0 = no limit.",
            labels=["node"])
        for node in self._queues.redis_memory:
            used.add_metric([node.node], node.used)
            limit.add_metric([node.node], node.limit)
        yield used
        yield limit
        if self._queues.line is not None:
            wave, figures = self._queues.line
            for name, value in figures.items():
                yield _wave_gauge(name, wave, value)
        # Every field of the policy (config/settings.py AdmissionPolicy), as a number.
        for name, value in self._policy.model_dump().items():
            yield GaugeMetricFamily(
                f"gelombang_admission_{name}", f"Admission setting in force: {name}.",
                value=float(value),
            )


_LINE_GAUGES: Final[Mapping[str, str]] = {
    "waiting": "People waiting in the waiting room's line (live tickets past the served"
               " counter; the pre-queue's size before the draw).",
    "served": "The line's served counter: positions whose turn has come.",
    "tail": "The last position handed out.",
    "expired": "Tickets of the wave skipped for idleness or whose turn passed unused.",
    "used": "Tickets of the wave that admitted a registration.",
    "left": "Tickets of the wave whose holders left the line.",
    "release_rate": "Positions the line releases a second (the admission rate unless set).",
}


def line_figures(view: LineView, release_rate: float) -> tuple[str, dict[str, float]]:
    """The line gauges' values from a door's copy of the line."""
    waiting = view.prequeue_size if view.phase == "prequeue" else view.waiting
    return view.wave, {"waiting": waiting, "served": view.served, "tail": view.tail,
                       "expired": view.expired, "used": view.used, "left": view.left,
                       "release_rate": release_rate}


def _wave_gauge(name: str, wave: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"gelombang_queue_{name}", _LINE_GAUGES[name], labels=["wave"])
    family.add_metric([wave], value)
    return family


def render(queues: QueueSnapshot, policy: AdmissionPolicy) -> bytes:
    """The Prometheus text for the whole process group plus the snapshot gauges."""
    # This process's counts up to now; its siblings' up to their last flush.
    flush()
    snapshot = CollectorRegistry()
    snapshot.register(_Snapshot(queues, policy))
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(snapshot)
