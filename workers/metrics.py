"""Prometheus metrics of one worker process, served on its own port.

Each worker process (drain, email or NIK) keeps a `WorkerMetrics` with a
registry of its own and answers `GET /metrics` itself (`serve_metrics`), on
the first free port of its role's range: no multiprocess folder, no shared
files, and several processes of one role on one machine each get a port.
Prometheus adds `instance`; the gauges that describe the whole deployment
(backlog, oldest pending) are the same in every process of a role, so
rules take their `max` by role, never the `sum`.

Every method is an in-memory update (no I/O, no await): call sites pass a
batch's counts, not one call per job. The names and labels are listed in
docs/metrics.md, next to the alerts built on them.

prometheus-client picks its value storage at import: with
PROMETHEUS_MULTIPROC_DIR set (the door's `gelombang serve` sets it for its
own children only) these metrics would also be written into that folder, so
a worker logs a warning when it finds the variable set.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Final, Literal

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from config.settings import WORKER_ROLES, WorkerRole

log = logging.getLogger("gelombang.metrics")

BreakerStateName = Literal["closed", "half_open", "open"]
# gelombang_breaker_state's values: alerts compare against these numbers.
BREAKER_VALUES: Final[Mapping[str, float]] = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
# The outside service each role calls under a rate limit and a breaker (none for the drain).
SERVICES: Final[Mapping[WorkerRole, str]] = {"email": "smtp", "nik": "nik"}
# The job outcomes each role records. A fixed set keeps the series bounded, and
# each starts at 0 so rate() sees a role's first jobs. The drain's stored
# registrations are accepted + duplicate + ineligible, as in the funnel.
OUTCOMES: Final[Mapping[WorkerRole, tuple[str, ...]]] = {
    "drain": ("accepted", "duplicate", "ineligible", "retried", "dead_letter"),
    "email": ("sent", "failed", "skipped", "retried", "dead_letter"),
    "nik": ("verified", "mismatch", "not_found", "failed", "skipped", "retried", "dead_letter"),
}

BATCH_SIZE_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000,
                             50_000)
BATCH_SECONDS_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                                30.0, 60.0)
# Registration to final outcome: seconds when the workers keep up, hours when a
# wave or an outage of the ministry's API or the SMTP relay builds a backlog.
LATENCY_BUCKETS: Final = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14_400,
                          21_600, 43_200, 86_400)
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


class NoFreeMetricsPort(OSError):
    """Every port of the role's metrics range is taken on this host."""


class WorkerMetrics:
    """The metrics of one worker process, in a registry of its own."""

    def __init__(self, role: WorkerRole, version: str = "") -> None:
        if role not in WORKER_ROLES:
            raise ValueError(f"unknown worker role: {role!r}")
        if os.environ.get(MULTIPROC_ENV):
            log.warning("%s is set: this worker's metrics also go to that folder", MULTIPROC_ENV)
        self.role: Final = role
        self.service: Final = SERVICES.get(role)
        self.registry: Final = CollectorRegistry()
        registry = self.registry
        # process_cpu_seconds_total, process_resident_memory_bytes,
        # process_start_time_seconds, ... (read from /proc at scrape time).
        ProcessCollector(registry=registry)
        Info("gelombang_worker", "The worker process's role and version.",
             registry=registry).info({"role": role, "version": version})
        Gauge("gelombang_worker_start_time_seconds",
              "When this worker process started (Unix time); uptime is time() minus it.",
              ["role"], registry=registry).labels(role).set(time.time())
        jobs = Counter("gelombang_worker_jobs_total",
                       "Jobs (or drained entries) finished by this process, by outcome.",
                       ["role", "outcome"], registry=registry)
        self._jobs: Final = {outcome: jobs.labels(role, outcome) for outcome in OUTCOMES[role]}
        self._batch_size: Final = Histogram(
            "gelombang_worker_batch_size", "Jobs (or entries) per batch.", ["role"],
            buckets=BATCH_SIZE_BUCKETS, registry=registry).labels(role)
        self._batch_seconds: Final = Histogram(
            "gelombang_worker_batch_seconds", "Time to process one batch.", ["role"],
            buckets=BATCH_SECONDS_BUCKETS, registry=registry).labels(role)
        self._oldest: Final = Gauge(
            "gelombang_worker_oldest_pending_seconds",
            "Age of the oldest job waiting for this role (0 when none waits).", ["role"],
            registry=registry).labels(role)
        self._backlog: Final = Gauge(
            "gelombang_worker_backlog",
            "Jobs waiting for this role, in Redis and PostgreSQL, deployment-wide.", ["role"],
            registry=registry).labels(role)
        self._latency: Final = Histogram(
            "gelombang_verification_latency_seconds",
            "Time from registration to a final verification outcome, by kind.", ["kind"],
            buckets=LATENCY_BUCKETS, registry=registry).labels(role)
        self._dead_letters: Final = Counter(
            "gelombang_worker_dead_letters_total",
            "Entries and jobs this process moved to the dead letters.", ["role"],
            registry=registry).labels(role)
        used = Gauge("gelombang_outbound_rate_used",
                     "Calls per second this process made to the outside service.", ["service"],
                     registry=registry)
        allowed = Gauge("gelombang_outbound_rate_allowed",
                        "Calls per second the shared limit allows to the outside service"
                        " (all workers together).", ["service"], registry=registry)
        breaker = Gauge("gelombang_breaker_state",
                        "This process's circuit breaker: 0 closed, 1 half-open, 2 open.",
                        ["service"], registry=registry)
        self._used: Final = used.labels(self.service) if self.service else None
        self._allowed: Final = allowed.labels(self.service) if self.service else None
        self._breaker: Final = breaker.labels(self.service) if self.service else None
        if self._breaker is not None:
            self._breaker.set(BREAKER_VALUES["closed"])

    def jobs(self, outcome: str, count: int) -> None:
        """Count `count` jobs of a batch that ended in `outcome` (one of OUTCOMES[role])."""
        try:
            counter = self._jobs[outcome]
        except KeyError:
            raise ValueError(f"unknown {self.role} outcome: {outcome!r}") from None
        if count:
            counter.inc(count)

    def batch(self, size: int, seconds: float) -> None:
        """Record one batch: how many jobs it held and how long it took."""
        self._batch_size.observe(size)
        self._batch_seconds.observe(seconds)

    def oldest_pending(self, seconds: float) -> None:
        """Set the age of the oldest waiting job."""
        self._oldest.set(max(seconds, 0.0))

    def backlog(self, count: int) -> None:
        """Set how many jobs wait for this role (Redis and PostgreSQL)."""
        self._backlog.set(count)

    def verified_after(self, seconds: Sequence[float]) -> None:
        """Record, per registration of a batch, the time from registration to its outcome."""
        observe = self._latency.observe
        for value in seconds:
            # Door and worker clocks differ by a little: never a negative latency.
            observe(value if value > 0 else 0.0)

    def outbound(self, used_per_second: float, allowed_per_second: float) -> None:
        """Set the outside service's call rate: this process's use and the shared limit."""
        if self._used is None or self._allowed is None:
            raise ValueError(f"the {self.role} role calls no outside service")
        self._used.set(used_per_second)
        self._allowed.set(allowed_per_second)

    def breaker(self, state: str) -> None:
        """Set the circuit breaker's state: closed, half_open or open."""
        if self._breaker is None:
            raise ValueError(f"the {self.role} role has no circuit breaker")
        try:
            value = BREAKER_VALUES[state]
        except KeyError:
            raise ValueError(f"unknown breaker state: {state!r}") from None
        self._breaker.set(value)

    def dead_letters(self, count: int) -> None:
        """Count entries or jobs moved to the dead letters."""
        if count:
            self._dead_letters.inc(count)

    def render(self) -> bytes:
        """The registry in Prometheus's text format."""
        return generate_latest(self.registry)


_METRICS: Final = web.AppKey("worker_metrics", WorkerMetrics)


async def _metrics_text(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_METRICS].render(),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


class MetricsServer:
    """A worker's GET /metrics listener; `port` is None when metrics are off."""

    def __init__(self, runner: web.AppRunner | None, host: str, port: int | None) -> None:
        self._runner = runner
        self.host: Final = host
        self.port: Final = port

    @property
    def url(self) -> str | None:
        """Where Prometheus scrapes this process (None when off)."""
        return None if self.port is None else f"http://{self.host}:{self.port}/metrics"

    async def close(self) -> None:
        """Stop listening and free the port (a second call does nothing)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> MetricsServer:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()


async def serve_metrics(metrics: WorkerMetrics, host: str, port_range: range) -> MetricsServer:
    """Serve GET /metrics on the running loop, on the first free port of `port_range`.

    An empty range (`WorkerMetricsSettings.ports()` when off) starts nothing.
    Raises NoFreeMetricsPort when every port of the range is taken.
    """
    if not port_range:
        log.info("%s worker metrics off (no listener)", metrics.role)
        return MetricsServer(None, host, None)
    if port_range.step != 1 or port_range.start < 1 or port_range.stop > 65536:
        raise ValueError(f"not a range of ports: {port_range!r}")
    app = web.Application()
    app[_METRICS] = metrics
    app.router.add_get("/metrics", _metrics_text)
    # A scrape answers in microseconds: a short deadline is plenty at shutdown.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        for port in port_range:
            site = web.TCPSite(runner, host, port)
            try:
                await site.start()
            except OSError as exc:
                await site.stop()  # a site that failed to start stays registered otherwise
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            log.info("%s worker metrics on http://%s:%d/metrics", metrics.role, host, port)
            return MetricsServer(runner, host, port)
    except BaseException:
        await runner.cleanup()
        raise
    await runner.cleanup()
    raise NoFreeMetricsPort(
        errno.EADDRINUSE,
        f"{metrics.role} worker metrics: ports {port_range.start}-{port_range.stop - 1}"
        f" on {host} are all taken (worker_metrics.ports_per_role)")
