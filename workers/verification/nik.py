"""NIK verification: a batch of jobs, concurrent calls to the ministry, one statement.

Per batch: one query loads the registrations with any earlier answer for
their NIKs (`nik_checks`: a NIK is never sent twice); the others' sealed
data is opened in memory and the ministry is asked, every call passing, in
order: the circuit breaker (an outage stops the calls; jobs wait in hand),
this process's cap on calls in flight (`nik.concurrency`), and a token of
the deployment-wide bucket (`nik.rate_per_second`, `nik.burst`), reserved
for many calls in one script call (workers/verification/rate_limit.py).
Then one statement records every outcome and caches the answers, and one
script call acknowledges.

A call failing for a reason worth retrying (5xx, 429, timeout, refused
connection) is tried again after back-off with jitter, never sooner than
the ministry's Retry-After. Failures count against a job only while the
breaker is closed (others are answered): during an outage jobs wait without
using up their tries. A job out of tries (`nik.max_attempts`), or one the
API refuses as such, is recorded `failed` and dead-lettered for ops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from asyncpg.pgproto.pgproto import UUID as WireUUID

from config.settings import Settings
from database.counters import counter_shard
from database.queries import Connection
from queueing.envelope import PersonalData, open_sealed
from queueing.errors import EnvelopeError, SealingError
from queueing.redis_client import RedisClient
from queueing.sealing import Sealer
from workers.metrics import WorkerMetrics
from workers.runtime.consumer import Batch, BatchStopped
from workers.runtime.retry import backoff_seconds
from workers.verification.breaker import CircuitBreaker
from workers.verification.jobs import DeadJob, Job, Verifier, decode_jobs
from workers.verification.nik_client import NikClient, NikRejected, NikUnavailable
from workers.verification.rate_limit import SharedRateLimit, TokenDispenser
from workers.verification.store import QUERIES, NikOutcome

log = logging.getLogger("gelombang.nik")

OUTCOMES: frozenset[str] = frozenset({"verified", "mismatch", "not_found", "failed"})


class NikVerifier(Verifier):
    """The NIK role's batch work."""

    role = "nik"

    def __init__(self, settings: Settings, redis: RedisClient, pool: asyncpg.Pool,
                 client: NikClient, limit: SharedRateLimit, breaker: CircuitBreaker,
                 metrics: WorkerMetrics | None = None) -> None:
        super().__init__(redis, pool, metrics)
        self.settings = settings.nik
        self.client = client
        self.tokens = TokenDispenser(limit)
        self.breaker = breaker
        self.sealer = Sealer(settings.keys.sealing_key_bytes(),
                             settings.keys.active_sealing_key_id)
        self.calls = asyncio.Semaphore(settings.nik.concurrency)

    @property
    def calls_made(self) -> int:
        """Calls that went out to the ministry."""
        return self.counts.get("calls", 0)

    @property
    def cache_hits(self) -> int:
        """Jobs answered from an earlier answer for the same NIK."""
        return self.counts.get("cache_hits", 0)

    async def handle(self, batch: Batch) -> None:
        """Answer the batch's jobs (from the cache, or the ministry) and record them."""
        decoded, dead = decode_jobs(batch)
        with self.claimed(decoded) as (jobs, busy):
            rows = await self.load(QUERIES["nik_jobs"], jobs)
            left = await self.left_outcomes(batch, jobs)
            done, known, to_ask = self._sort(jobs, rows, left, dead)
            await self._ask_and_record(batch, to_ask, known, left, [*busy, *done], dead)

    async def _ask_and_record(self, batch: Batch, to_ask: Sequence[tuple[Job, bytes,
                                                                        PersonalData]],
                              known: list[tuple[Job, bytes, str]], left: Mapping[bytes, bytes],
                              done: list[bytes], dead: list[DeadJob]) -> None:
        # Every call's first token is announced: the dispenser reserves for
        # the batch in a few script calls instead of one per handful of calls.
        self.tokens.announce(len(to_ask))
        asked = await asyncio.gather(*(self._ask(person) for _, _, person in to_ask),
                                     return_exceptions=True)
        stopped = False
        for (job, nik_hash, _), answer in zip(to_ask, asked, strict=True):
            if isinstance(answer, BatchStopped):
                stopped = True  # unanswered: stays pending
            elif isinstance(answer, BaseException):
                raise answer
            else:
                known.append((job, nik_hash, answer))
        if known:
            await self._record(batch, known)
            await self.forget_outcomes(batch, [job.registration_id for job, _, _ in known
                                               if job.registration_id in left])
        for job, _, outcome in known:
            if outcome == "failed":
                dead.append(DeadJob(job.entry_id, "NIK check failed: the API refused it or "
                                    "ran out of tries", job.registration_id))
            else:
                done.append(job.entry_id)
        await self.finish(batch, done, dead)
        if stopped:
            raise BatchStopped

    def _sort(self, jobs: Sequence[Job], rows: Mapping[bytes, asyncpg.Record],
              left: Mapping[bytes, bytes], dead: list[DeadJob]
              ) -> tuple[list[bytes], list[tuple[Job, bytes, str]],
                         list[tuple[Job, bytes, PersonalData]]]:
        """Jobs done before, jobs answered already (cache, or left by a stopped worker),
        and jobs to ask the ministry about (their sealed data opened); dead ones added."""
        done: list[bytes] = []
        known: list[tuple[Job, bytes, str]] = []
        to_ask: list[tuple[Job, bytes, PersonalData]] = []
        for job in jobs:
            row = rows.get(job.registration_id)
            left_outcome = left.get(job.registration_id, b"").decode()
            if row is None:
                dead.append(DeadJob(job.entry_id, "registration not stored", job.registration_id))
            elif row["state"] != "accepted" or row["nik_verification"] != "pending":
                # Done before (a repeated job, or its other job), never to be asked.
                done.append(job.entry_id)
                self.count("skipped")
            elif row["cached"] is not None:
                self.count("cache_hits")
                known.append((job, row["nik_hash"], row["cached"]))
            elif left_outcome in OUTCOMES:
                known.append((job, row["nik_hash"], left_outcome))
            else:
                try:
                    person = open_sealed(self.sealer, job.registration_id, row["key_id"],
                                         row["sealed"])
                except (SealingError, EnvelopeError):
                    dead.append(DeadJob(job.entry_id, "sealed data cannot be opened",
                                        job.registration_id))
                    continue
                to_ask.append((job, row["nik_hash"], person))
        return done, known, to_ask

    async def _record(self, batch: Batch, known: Sequence[tuple[Job, bytes, str]]) -> None:
        ids = [WireUUID(job.registration_id) for job, _, _ in known]
        hashes = [nik_hash for _, nik_hash, _ in known]
        outcomes = [outcome for _, _, outcome in known]

        async def write(connection: Connection) -> asyncpg.Record | None:
            return await connection.fetchrow(QUERIES["record_nik_outcomes"], ids, hashes,
                                             outcomes, counter_shard())

        row = await self.record(batch, write, {job.registration_id: outcome.encode()
                                               for job, _, outcome in known})
        if row is not None:
            self.waited(row["waited"])
        for outcome in outcomes:
            self.count(outcome)

    async def _ask(self, person: PersonalData) -> NikOutcome:
        """Call the API until it answers, it refuses, or the tries run out."""
        announced = [True]  # its first token was announced to the dispenser
        try:
            return await self._ask_until_answered(person, announced)
        finally:
            if announced[0]:
                self.tokens.withdraw()

    async def _ask_until_answered(self, person: PersonalData, announced: list[bool]
                                  ) -> NikOutcome:
        failures = 0
        while True:
            wait, is_probe = self.breaker.permit()
            if wait > 0:  # open, held, or a probe is out: wait, stop-aware
                is_probe = await self._wait(self.breaker.wait_turn())
            try:
                # A slot first, then the token: a token is spent only by a call
                # that goes out at once, so tokens never pile up behind slots.
                # (A token is due within a quarter of a second: no stop check.)
                async with self.calls:
                    await self.tokens.take(announced[0])
                    announced[0] = False
                    self.count("calls")
                    outcome = await self.client.check(person.nik, person.full_name,
                                                      person.birth_date)
            except NikRejected as refusal:
                self.breaker.succeeded()  # it answered: it is up
                log.error("NIK API refused the request (%s); marked failed", refusal)
                return "failed"
            except NikUnavailable as failure:
                self.count("retried")
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
        stopping = self.runtime.stopping
        if stopping.is_set():
            step.close()
            raise BatchStopped
        task = asyncio.ensure_future(step)
        stop = asyncio.ensure_future(stopping.wait())
        done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            stop.cancel()
            return task.result()
        task.cancel()
        raise BatchStopped
