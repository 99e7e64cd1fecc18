"""Prometheus metrics of the door, correct across its processes.

`gelombang serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder before it
starts the door processes, so every process writes its samples there and any
of them can answer a scrape for the whole group. Without that variable (a
single in-process door, as in some tests) the default registry is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

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
from queueing.redis_memory import NodeMemory

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

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

EMAIL_VERIFIED = Counter(
    "gelombang_email_verified_total",
    "Verification links that verified an address (the first opening of each; the funnel's"
    " email_verified).",
)

_OUTCOME_NAMES: Mapping[Outcome, str] = {
    Outcome.ADMITTED: "admitted",
    Outcome.REPLAYED: "replayed",
    Outcome.LIMITED: "limited",
    Outcome.BACKLOG_FULL: "backlog_full",
    Outcome.CLOSED: "closed",
}
_DECISION_COUNTERS = {outcome: DECISIONS.labels(name) for outcome, name in _OUTCOME_NAMES.items()}
# Also a request shed unsent while a lost reply is found out (answered 503
# queue_unavailable, as the round trips Redis refused).
UNAVAILABLE = DECISIONS.labels("unavailable")
_UNKNOWN = DECISIONS.labels("unknown")
OVERLOADED = DECISIONS.labels("overloaded")


class RequestTimer:
    """Latency observations with the labelled children looked up once each."""

    __slots__ = ("_children",)

    def __init__(self) -> None:
        self._children: dict[tuple[str, int], Histogram] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        child = self._children.get((route, status))
        if child is None:
            child = REQUEST_SECONDS.labels(route, str(status))
            self._children[(route, status)] = child
        child.observe(seconds)


def observe_group(stats: GroupStats) -> None:
    """Record one admission round trip and its decisions."""
    GROUP_SIZE.observe(stats.size)
    REDIS_SECONDS.observe(stats.seconds)
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

    Read from the same Prometheus children the hot path bumps, so reporting
    adds nothing per request; with PROMETHEUS_MULTIPROC_DIR each child holds
    this process's value only.
    """
    counters = {name: 0.0 for name in (*_OUTCOME_NAMES.values(), "unavailable", "unknown",
                                        "overloaded")}
    for family in DECISIONS.collect():
        for sample in family.samples:
            if sample.name == "gelombang_admission_decisions_total":
                counters[sample.labels["outcome"]] = sample.value
    for family in EMAIL_VERIFIED.collect():
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
        for name, value in (
            ("rate_per_second", self._policy.rate_per_second),
            ("burst", self._policy.burst),
            ("backlog_high_water", self._policy.backlog_high_water),
            ("enabled", float(self._policy.enabled)),
            ("open", float(self._policy.open)),
        ):
            yield GaugeMetricFamily(
                f"gelombang_admission_{name}", f"Admission setting in force: {name}.", value=value
            )


def render(queues: QueueSnapshot, policy: AdmissionPolicy) -> bytes:
    """The Prometheus text for the whole process group plus the snapshot gauges."""
    snapshot = CollectorRegistry()
    snapshot.register(_Snapshot(queues, policy))
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(snapshot)
