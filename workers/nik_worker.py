"""`gelombang worker nik`: check each accepted registration's NIK with the ministry.

The ministry's API is small and shared, so every call passes, in order:
the circuit breaker (an outage stops the calls; jobs wait in hand), the
deployment-wide token bucket in Redis (`nik.rate_per_second`, `nik.burst`,
over all NIK workers), and this process's cap on calls in flight
(`nik.concurrency`), with a timeout per call. A call that fails for a
reason worth retrying (5xx, 429, timeout, refused connection) is tried again
after exponential back-off with jitter, never sooner than the API's
Retry-After. Failures only count against a job while the breaker is closed:
during an outage jobs wait without using up their tries, and complete after.
A job out of tries (`nik.max_attempts`), or one the API refuses as such, is
marked `failed` and dead-lettered for ops.

Answers are cached by NIK hash (`nik_checks`), so a NIK is never sent twice,
even by a redelivered job. Duplicates and ineligible registrations never get
a job (the drain marks them `skipped`), and a job for one is ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import Any

import asyncpg
import uvloop

from config.settings import Settings
from queueing import breaker_reports
from queueing.envelope import PersonalData, open_sealed
from queueing.redis_client import RedisClient
from queueing.sealing import Sealer
from workers.breaker import CircuitBreaker
from workers.drain import TRANSIENT, connect_worker_redis, create_pool
from workers.jobs import JobAbandoned, JobConsumer, JobDeferred, JobSettings, VerificationJob
from workers.nik_client import NikClient, NikRejected, NikUnavailable
from workers.rate_limit import SharedRateLimit
from workers.recording import record_after_the_fact
from workers.retry import backoff_seconds
from workers.verification_store import (
    NikOutcome,
    cached_nik_outcome,
    job_subject,
    record_nik_outcome,
)
from workers.worker_command import configure_logging

log = logging.getLogger("gelombang.nik")

# Jobs in hand per call slot: the rest wait out back-offs without blocking a slot.
JOBS_PER_CALL_SLOT = 2


class NikVerifier:
    """The handler of NIK jobs."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, client: NikClient,
                 limit: SharedRateLimit, breaker: CircuitBreaker) -> None:
        self.settings = settings.nik
        self.pool = pool
        self.client = client
        self.limit = limit
        self.breaker = breaker
        self.sealer = Sealer(settings.keys.sealing_key_bytes(),
                             settings.keys.active_sealing_key_id)
        self.calls = asyncio.Semaphore(settings.nik.concurrency)
        self.stopping = asyncio.Event()
        self.calls_made = 0
        self.cache_hits = 0

    async def __call__(self, job: VerificationJob) -> None:
        rid = job.registration_id
        async with self.pool.acquire() as connection:
            subject = await job_subject(connection, rid)
            if subject is None:
                raise JobAbandoned("registration not stored")
            if subject.state != "accepted" or subject.nik_verification != "pending":
                return  # done before (a redelivered job), or never to be checked
            cached = await cached_nik_outcome(connection, subject.nik_hash)
        if cached is not None:
            self.cache_hits += 1
            outcome = cached
        else:
            person = open_sealed(self.sealer, rid.bytes, subject.key_id, subject.sealed)
            outcome = await self._ask(person)
        await record_after_the_fact(
            self.pool, lambda c: record_nik_outcome(c, rid, subject.nik_hash, outcome),
            self.stopping, "a NIK answer")
        if outcome == "failed":
            raise JobAbandoned("NIK check failed: the API refused it or ran out of tries")

    async def _ask(self, person: PersonalData) -> NikOutcome:
        """Call the API until it answers, it refuses, or the tries run out."""
        failures = 0
        while True:
            is_probe = await self._wait(self.breaker.wait_turn())
            try:
                # A slot first, then the token: a token is spent only by a call
                # that goes out at once, so tokens never pile up behind slots.
                async with self.calls:
                    await self._wait(self.limit.acquire())
                    self.calls_made += 1
                    outcome = await self.client.check(person.nik, person.full_name,
                                                      person.birth_date)
            except NikRejected as refusal:
                self.breaker.succeeded()  # it answered: it is up
                log.error("NIK API refused the request (%s); marked failed", refusal)
                return "failed"
            except NikUnavailable as failure:
                if failure.busy:
                    # Full, not down: pause every call of this process as asked.
                    self.breaker.succeeded()
                    self.breaker.hold(failure.retry_after or 1.0)
                else:
                    self.breaker.failed()
                    if not is_probe:  # an outage's probes use no job's tries
                        failures += 1
                if failures >= self.settings.max_attempts:
                    log.warning("NIK check out of tries (%s)", failure)
                    return "failed"
                delay = backoff_seconds(max(1, failures), self.settings.retry_base_seconds,
                                        self.settings.retry_max_seconds, failure.retry_after)
                await self._wait(asyncio.sleep(delay))
                continue
            except BaseException:
                if is_probe:
                    self.breaker.released()
                raise
            self.breaker.succeeded()
            return outcome

    async def _wait(self, step: Any) -> Any:
        """Await a step unless the worker stops first (then the job stays pending)."""
        if self.stopping.is_set():
            step.close()
            raise JobDeferred
        task = asyncio.ensure_future(step)
        stop = asyncio.ensure_future(self.stopping.wait())
        done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            stop.cancel()
            return task.result()
        task.cancel()
        raise JobDeferred


def register_role(roles: Any) -> None:
    """Add `worker nik`."""
    parser = roles.add_parser("nik", help="check NIKs with the ministry's API")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="calls in flight at once (default: nik.concurrency)")
    parser.set_defaults(handler=run_nik)


def run_nik(args: argparse.Namespace) -> int:
    """Check until SIGTERM or SIGINT; calls in flight finish, waiting jobs stay queued."""
    overrides: dict[str, Any] = {}
    if args.concurrency is not None:
        overrides["nik"] = {"concurrency": args.concurrency}
    settings = Settings.load(**overrides)
    settings.keys.require()
    configure_logging(settings)
    uvloop.run(serve_nik(settings))
    return 0


def nik_parts(settings: Settings, redis: RedisClient, pool: asyncpg.Pool
              ) -> tuple[NikVerifier, JobConsumer]:
    """The verifier and the job consumer that feeds it."""
    nik = settings.nik
    verifier = NikVerifier(settings, pool, NikClient(nik),
                           SharedRateLimit(redis, "nik", nik.rate_per_second, nik.burst),
                           CircuitBreaker(nik.breaker_failures, nik.breaker_open_seconds))
    job_settings = JobSettings(concurrency=nik.concurrency * JOBS_PER_CALL_SLOT,
                               claim_idle_seconds=nik.claim_idle_seconds,
                               max_deliveries=10)
    consumer = JobConsumer(redis, "nik", verifier, job_settings, settings.queue.partitions)
    return verifier, consumer


async def serve_nik(settings: Settings) -> None:
    """Run one NIK worker until SIGTERM/SIGINT."""
    redis = connect_worker_redis(settings)
    pool = await create_pool(settings, settings.nik.concurrency + 1)
    verifier, consumer = nik_parts(settings, redis, pool)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        consumer.stopping.set()
        verifier.stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    log.info("NIK worker %s started", consumer.name)
    try:
        await run_consumer(redis, verifier, consumer)
    finally:
        await verifier.client.close()
        await pool.close()
        await redis.aclose()
        log.info("NIK worker stopped after %d calls (%d answered from the cache)",
                 verifier.calls_made, verifier.cache_hits)


async def run_consumer(redis: RedisClient, verifier: NikVerifier, consumer: JobConsumer) -> None:
    """Consume jobs until stopped, publishing the breaker's state meanwhile."""
    reporting = asyncio.create_task(report_breaker(redis, verifier.breaker, consumer.name))
    try:
        await consumer.run()
    finally:
        reporting.cancel()
        await asyncio.gather(reporting, return_exceptions=True)
        with contextlib.suppress(*TRANSIENT):
            await breaker_reports.withdraw(redis, "nik", consumer.name)


async def report_breaker(redis: RedisClient, breaker: CircuitBreaker, worker: str) -> None:
    """Publish the breaker's state every few seconds, for /metrics and the ops views."""
    while True:
        try:
            await breaker_reports.report(redis, "nik", worker, breaker.current_state().value)
        except TRANSIENT:
            pass  # Redis away: the report goes stale, and the views say so
        await asyncio.sleep(breaker_reports.REPORT_SECONDS)
