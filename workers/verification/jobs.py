"""What the email and NIK verifiers share: a batch of jobs, from decoding to dead letters.

A job is `{"r": <16-byte registration id>}` on the partition's verification
stream (workers/drain/handoff.py). A verifier's batch (workers/runtime/consumer.py):
decode the jobs; load their registrations in one query; skip the ones done
before (a repeated job changes nothing); do the role's work for the rest;
record every outcome in one statement; acknowledge in one script call.

Only a job's own permanent failure dead-letters it (malformed, its
registration not stored, its sealed data unreadable with the keys at hand,
an outside service refusing it as such): it goes to the partition's dead
stream with the reason, and `gelombang dead-letters replay` brings it back.
PostgreSQL, Redis or the outside service being away holds the batch and
retries; nothing is counted against the jobs.

Outcomes an outside service gave (a sent message, the ministry's answer)
are worth more than a retry: if the worker must stop before PostgreSQL
records them, they are left in Redis (`Partition.verification_outcomes`),
and whoever takes the jobs over records them instead of sending or asking
again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import asyncpg
from asyncpg.pgproto.pgproto import UUID as WireUUID

from database.queries import Connection
from queueing.keys import Partition
from queueing.redis_client import RedisClient
from workers.drain.handoff import JOB_FIELD
from workers.metrics import OUTCOMES, WorkerMetrics
from workers.runtime.connections import TRANSIENT
from workers.runtime.consumer import Batch, BatchStopped, PartitionConsumer

log = logging.getLogger("gelombang.verification")

T = TypeVar("T")
# Outcomes left for a successor are kept this long at most.
OUTCOMES_KEPT_SECONDS: Final = 7 * 86400


@dataclass(frozen=True, slots=True)
class Job:
    """One verification job: an entry naming a registration."""

    entry_id: bytes
    registration_id: bytes  # 16 bytes


@dataclass(frozen=True, slots=True)
class DeadJob:
    """A job given up on, and why (never a personal value in the reason)."""

    entry_id: bytes
    reason: str
    registration_id: bytes


def decode_jobs(batch: Batch) -> tuple[list[Job], list[DeadJob]]:
    """The batch's jobs, and the malformed entries as dead jobs."""
    jobs, dead = [], []
    for entry_id, fields in batch.entries:
        raw = fields.get(JOB_FIELD)
        if raw is None or len(raw) != 16:
            dead.append(DeadJob(entry_id, "malformed job", raw or b""))
        else:
            jobs.append(Job(entry_id, raw))
    return jobs, dead


class Verifier:
    """The part of a verification role every batch goes through."""

    role = ""

    def __init__(self, redis: RedisClient, pool: asyncpg.Pool,
                 metrics: WorkerMetrics | None = None) -> None:
        self.redis = redis
        self.pool = pool
        self.metrics = metrics
        self.consumer: PartitionConsumer | None = None
        self.counts: dict[str, int] = {}
        # Registrations whose job this process is working on: a second job for
        # one (its priority job beside its backlog job) is finished by the first.
        self.in_flight: set[bytes] = set()

    def bind(self, consumer: PartitionConsumer) -> None:
        """The consumer that feeds this verifier (its stop, retries, acknowledgement)."""
        self.consumer = consumer

    @property
    def runtime(self) -> PartitionConsumer:
        """The bound consumer."""
        assert self.consumer is not None, "bind() the verifier to its consumer first"
        return self.consumer

    def count(self, what: str, amount: int = 1) -> None:
        """Count something done, for the heartbeat, the logs and the metrics."""
        if not amount:
            return
        self.counts[what] = self.counts.get(what, 0) + amount
        if self.metrics is not None and what in OUTCOMES[self.metrics.role]:
            self.metrics.jobs(what, amount)

    def waited(self, seconds: Sequence[float]) -> None:
        """Registration to final outcome, for each registration a batch moved on."""
        if self.metrics is not None and seconds:
            self.metrics.verified_after(seconds)

    async def idle(self, partition: Partition) -> None:
        """Nothing to do between reads."""

    def heartbeat_fields(self) -> Mapping[str, str | int | float]:
        """What this process did so far, beside its heartbeat."""
        return dict(self.counts)

    @contextlib.contextmanager
    def claimed(self, jobs: Sequence[Job]) -> Iterator[tuple[list[Job], list[bytes]]]:
        """The jobs this batch works on, and the entry ids of those another batch has.

        A registration has two jobs when its registrant waits (the priority
        lane's beside the backlog's), and both lanes run at once. The claim is
        made before the registrations are loaded, with no await in between: a
        batch that loads a registration holds it, so the other batch either
        sees it claimed or loads it after the first recorded its outcome.
        """
        ours: list[Job] = []
        busy: list[bytes] = []
        for job in jobs:
            if job.registration_id in self.in_flight:
                busy.append(job.entry_id)  # finished by the batch that has it
            else:
                self.in_flight.add(job.registration_id)
                ours.append(job)
        self.count("skipped", len(busy))
        try:
            yield ours, busy
        finally:
            self.in_flight.difference_update(job.registration_id for job in ours)

    async def load(self, query: str, jobs: Sequence[Job]) -> dict[bytes, asyncpg.Record]:
        """The jobs' registrations in one query, by 16-byte id (missing ones absent)."""
        ids = [WireUUID(job.registration_id) for job in jobs]
        rows = await self.runtime.until_done(
            lambda: self._fetch(query, ids), f"{self.role}: loading {len(ids)} registrations")
        return {row["registration_id"].bytes: row for row in rows}

    async def _fetch(self, query: str, ids: list[WireUUID]) -> list[asyncpg.Record]:
        async with self.pool.acquire() as connection:
            return list(await connection.fetch(query, ids))

    async def record(self, batch: Batch, write: Callable[[Connection], Awaitable[T]],
                     outcomes: Mapping[bytes, bytes]) -> T:
        """Run the batch's one recording statement until PostgreSQL takes it.

        `outcomes` (registration id -> outcome) are what an outside service
        did: a worker stopping before they are recorded leaves them in Redis
        for its successor.
        """
        async def attempt() -> T:
            async with self.pool.acquire() as connection:
                return await write(connection)

        try:
            return await self.runtime.until_done(attempt, f"{self.role}: recording outcomes")
        except BatchStopped:
            if outcomes:
                await self._leave_outcomes(batch, outcomes)
            raise

    async def _leave_outcomes(self, batch: Batch, outcomes: Mapping[bytes, bytes]) -> None:
        key = batch.partition.verification_outcomes(self.role)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                _ = pipe.hset(key, mapping=dict(outcomes))  # type: ignore[arg-type]
                _ = pipe.expire(key, OUTCOMES_KEPT_SECONDS)
                await pipe.execute()
            log.warning("%s: %d outcomes left in Redis for the next worker", self.role,
                        len(outcomes))
        except TRANSIENT as exc:
            # Redis is away too: the jobs are done again (at least once).
            log.warning("%s: %d outcomes lost (%s); their jobs are done again", self.role,
                        len(outcomes), type(exc).__name__)

    async def left_outcomes(self, batch: Batch, jobs: Sequence[Job]) -> dict[bytes, bytes]:
        """Outcomes a stopped worker left for these jobs (only a reclaimed batch has any)."""
        if not batch.reclaimed or not jobs:
            return {}
        key = batch.partition.verification_outcomes(self.role)
        ids = [job.registration_id for job in jobs]
        values: Any = await self.runtime.until_done(
            lambda: self.redis.hmget(key, ids), f"{self.role}: reading left outcomes")
        return {rid: value for rid, value in zip(ids, values, strict=True) if value is not None}

    async def forget_outcomes(self, batch: Batch, ids: Sequence[bytes]) -> None:
        """Drop left outcomes once recorded (they expire anyway)."""
        if ids:
            try:
                await self.redis.hdel(batch.partition.verification_outcomes(self.role), *ids)
            except TRANSIENT:
                pass

    async def finish(self, batch: Batch, done: Sequence[bytes], dead: Sequence[DeadJob]
                     ) -> None:
        """Dead-letter what failed for good, then acknowledge it with what is done."""
        if dead:
            await self.runtime.until_done(lambda: self._dead_letter(batch, dead),
                                          f"{self.role}: dead-lettering {len(dead)} jobs")
            self.count("dead_letter", len(dead))
            if self.metrics is not None:
                self.metrics.dead_letters(len(dead))
            log.warning("%s, partition %d: %d jobs dead-lettered (%s)", self.role,
                        batch.partition.index, len(dead),
                        ", ".join(sorted({job.reason for job in dead})))
        await self.runtime.acknowledge(batch, [*done, *(job.entry_id for job in dead)])
        self.count("jobs", len(done) + len(dead))

    async def _dead_letter(self, batch: Batch, dead: Sequence[DeadJob]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job in dead:
                fields: dict[Any, Any] = {"entry": job.entry_id, "stream": batch.stream,
                                          "reason": job.reason, JOB_FIELD: job.registration_id}
                _ = pipe.xadd(batch.partition.dead_letters, fields)
            await pipe.execute()
