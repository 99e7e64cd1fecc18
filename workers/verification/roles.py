"""`gelombang worker email|nik`: the verification roles, each on the worker runtime.

Each process: one Redis client, a PostgreSQL pool of `pg_connections` (a
small fixed number, whatever the calls in flight), the role's outside
client (pipelined SMTP sessions, or keep-alive connections to the
ministry), and a
`PartitionConsumer` (workers/runtime/consumer.py) feeding batches to the
verifier. SIGTERM or SIGINT: no new batch is read; messages and calls in
flight finish and are recorded; what is left stays pending and is taken
over at once by the next worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvloop

from config.settings import Settings, WorkerRole
from queueing import breaker_reports
from queueing.keys import Partition
from queueing.redis_client import RedisClient
from queueing.redis_memory import wait_until_checked
from queueing.supervision import Supervisor
from workers.metrics import WorkerMetrics, serve_metrics
from workers.runtime.connections import TRANSIENT, connect_worker_redis, create_pool
from workers.runtime.consumer import ConsumerSettings, PartitionConsumer
from workers.verification.breaker import CircuitBreaker
from workers.verification.email import EmailVerifier, close_quietly
from workers.verification.jobs import Verifier
from workers.verification.nik import NikVerifier
from workers.verification.nik_client import NikClient
from workers.verification.rate_limit import SharedRateLimit
from workers.verification.smtp import SmtpPool

log = logging.getLogger("gelombang.verification")

# Back-off ceiling while PostgreSQL or Redis is away.
RETRY_MAX_SECONDS = 10.0
OUTBOUND_SAMPLE_SECONDS = 5.0
# The priority lane's batches: a few registrants at a time.
PRIORITY_BATCH_SIZE = 20


def register_role(roles: Any) -> None:
    """Add `worker email` and `worker nik`."""
    email = roles.add_parser("email", help="send the verification emails")
    email.add_argument("--concurrency", type=int, default=None,
                       help="batches in hand at once (default: email.concurrency)")
    email.set_defaults(handler=run_role, role="email")
    nik = roles.add_parser("nik", help="check NIKs with the ministry's API")
    nik.add_argument("--concurrency", type=int, default=None,
                     help="calls in flight at once (default: nik.concurrency)")
    nik.set_defaults(handler=run_role, role="nik")


def run_role(args: argparse.Namespace) -> int:
    """Verify until SIGTERM or SIGINT."""
    from workers.worker_command import configure_logging

    overrides: dict[str, Any] = {}
    if args.concurrency is not None:
        overrides[args.role] = {"concurrency": args.concurrency}
    settings = Settings.load(**overrides)
    # The email worker needs the address keys, never the sealing keys (docs/security.md).
    if args.role == "email":
        settings.keys.require_address()
    else:
        settings.keys.require()
    configure_logging(settings, args.role)
    uvloop.run(serve(settings, args.role))
    return 0


@dataclass
class RunningRole:
    """A verification role's parts, for the runner and the tests."""

    verifier: Verifier
    consumer: PartitionConsumer  # the backlog's; its `stopping` stops both
    limit: SharedRateLimit
    priority: PartitionConsumer


def priority_settings(backlog: ConsumerSettings, partition_count: int) -> ConsumerSettings:
    """The priority lane's consumer: small batches, its own leases.

    A slot per partition: a loop holds its slot through its blocking read, so
    with fewer slots a job in one partition would wait for reads of others
    to time out (a block_ms each) before its own read began."""
    return dataclasses.replace(backlog, role=f"{backlog.role}-priority",
                               batch_size=min(backlog.batch_size, PRIORITY_BATCH_SIZE),
                               slots=partition_count)


def consumer_settings(settings: Settings, role: str) -> ConsumerSettings:
    """How the role consumes its backlog streams."""
    section = settings.email if role == "email" else settings.nik
    slots = settings.email.concurrency if role == "email" else settings.nik.batches_in_hand
    return ConsumerSettings(
        role=role, group=f"verify-{role}", batch_size=section.batch_size,
        block_ms=settings.drain.block_ms, claim_idle_seconds=section.claim_idle_seconds,
        slots=slots, heartbeat_seconds=settings.drain.heartbeat_seconds,
        retry_max_seconds=RETRY_MAX_SECONDS)


@contextlib.asynccontextmanager
async def running_role(settings: Settings, role: str, metrics: WorkerMetrics | None = None
                       ) -> AsyncIterator[RunningRole]:
    """The role's verifier and consumer, connected; closed after the block."""
    redis = connect_worker_redis(settings)
    # An evicting Redis could drop queued jobs: refuse to run against one.
    await wait_until_checked(redis, f"{role} worker")
    pool = await create_pool(settings, getattr(settings, role).pg_connections, role)
    verifier: Verifier
    smtp: SmtpPool | None = None
    client: NikClient | None = None
    if role == "email":
        smtp = SmtpPool(settings.email)
        limit = SharedRateLimit(redis, "smtp", settings.email.rate_per_second,
                                max(1, int(settings.email.rate_per_second)))
        verifier = EmailVerifier(settings, redis, pool, smtp, limit, metrics)
    else:
        nik = settings.nik
        client = NikClient(nik)
        limit = SharedRateLimit(redis, "nik", nik.rate_per_second, nik.burst)
        verifier = NikVerifier(settings, redis, pool, client, limit,
                               CircuitBreaker(nik.breaker_failures, nik.breaker_open_seconds),
                               metrics)
    backlog = consumer_settings(settings, role)
    consumer = PartitionConsumer(redis, backlog,
                                 lambda partition: Partition.verification(partition, role),
                                 verifier, settings.queue.partitions, metrics=metrics)
    # Registrants who wait (a resend, a status page polled) are served from
    # their own streams, read beside the backlog's: a job there is picked up
    # at once, whatever the backlog holds.
    priority = PartitionConsumer(
        redis, priority_settings(backlog, settings.queue.partitions),
        lambda partition: Partition.verification_priority(partition, role), verifier,
        settings.queue.partitions, name=f"{consumer.name}-priority",
        stopping=consumer.stopping)
    verifier.bind(consumer)
    try:
        yield RunningRole(verifier, consumer, limit, priority)
    finally:
        if smtp is not None:
            await close_quietly(smtp)
        if client is not None:
            await client.close()
        await pool.close()
        await redis.aclose()


async def consume(running: RunningRole) -> None:
    """Run the consumer until stopped (the NIK role publishes its breaker meanwhile)."""
    verifier, consumer = running.verifier, running.consumer
    # Reports only (metrics, the breaker's state for the ops views): a failure
    # costs a stale figure, never a job, so they are restarted.
    helpers = Supervisor()
    metrics = verifier.metrics
    if metrics is not None:
        helpers.start("outbound sampler", lambda: sample_outbound(running, metrics), "restart")
    if isinstance(verifier, NikVerifier):
        breaker, redis = verifier.breaker, verifier.redis
        helpers.start("breaker report", lambda: report_breaker(redis, breaker, consumer.name),
                      "restart")
    try:
        # Both to their end (they share one stop event) before a failure is raised.
        results = await asyncio.gather(consumer.run(), running.priority.run(),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
    finally:
        await helpers.close()
        if isinstance(verifier, NikVerifier):
            with contextlib.suppress(*TRANSIENT):
                await breaker_reports.withdraw(verifier.redis, "nik", consumer.name)


async def sample_outbound(running: RunningRole, metrics: WorkerMetrics) -> None:
    """Every few seconds: this process's outbound call rate against the shared limit,
    and the NIK breaker's state."""
    taken, at = running.limit.reserved, time.monotonic()
    while True:
        await asyncio.sleep(OUTBOUND_SAMPLE_SECONDS)
        now = time.monotonic()
        metrics.outbound((running.limit.reserved - taken) / (now - at), running.limit.rate)
        taken, at = running.limit.reserved, now
        if isinstance(running.verifier, NikVerifier):
            metrics.breaker(running.verifier.breaker.current_state().value)


async def serve(settings: Settings, role: str) -> None:
    """Run one verification worker until SIGTERM/SIGINT, its metrics on their own port."""
    worker_role: WorkerRole = "email" if role == "email" else "nik"
    metrics = WorkerMetrics(worker_role)
    exporter = await serve_metrics(metrics, settings.worker_metrics.host,
                                   settings.worker_metrics.ports(worker_role))
    async with exporter, running_role(settings, role, metrics) as running:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, running.consumer.stopping.set)
        name = "NIK" if role == "nik" else role
        log.info("%s worker %s started", name, running.consumer.name)
        await consume(running)
        log.info("%s worker stopped: %s", name,
                 ", ".join(f"{what} {count}" for what, count in
                           sorted(running.verifier.counts.items())) or "nothing done")


async def report_breaker(redis: RedisClient, breaker: CircuitBreaker, worker: str) -> None:
    """Publish the breaker's state every few seconds, for /metrics and the ops views."""
    while True:
        try:
            await breaker_reports.report(redis, "nik", worker, breaker.current_state().value)
        except TRANSIENT:
            pass  # Redis away: the report goes stale, and the views say so
        await asyncio.sleep(breaker_reports.REPORT_SECONDS)
