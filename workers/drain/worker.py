"""The drain: intake streams into PostgreSQL, exactly once.

The drain is the worker runtime's ordered role (workers/runtime/consumer.py):
one consumer group (`store`) per partition stream; a partition is stored by
one process at a time (its lease), one batch after another, in order; a
process never holds more batches than its `concurrency` slots. A batch is
stored in one statement (workers/drain/store.py), its verification jobs handed
off, and only then acknowledged and trimmed from the stream
(workers/runtime/acknowledge.py), so Redis memory stays bounded by the
backlog.

Failures: while PostgreSQL or Redis is down the batch stays in hand and is
retried with back-off (its entries stay pending, and their idle time and
the lease are renewed by the runtime's keeper, so no other worker takes
them over meanwhile). Entries a dead worker left pending are taken by the
next holder of its partition's lease, and reclaimed after
`claim_idle_seconds` anyway. An entry that cannot be decoded, or that
PostgreSQL refused `max_refusals` times, goes to the dead letters with its
reason and never blocks its partition; nothing else (reads, takeovers,
outages) counts against an entry.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg

from config.settings import DrainSettings, Settings
from database.counters import COUNTER_SHARDS, add_counts
from database.queries import Connection
from queueing.envelope import STREAM_FIELD, Envelope
from queueing.errors import EnvelopeError
from queueing.keys import STORE_GROUP, Partition
from queueing.redis_client import RedisClient
from queueing.supervision import Supervisor
from workers.drain import audit_archive
from workers.drain.handoff import KINDS, Handoff
from workers.drain.refusals import RefusalCounts, Refused, refusal
from workers.drain.store import (
    QUERIES,
    STATES,
    fence,
    forget_handoffs,
    mark_handoffs,
    refill,
    store_batch,
)
from workers.metrics import WorkerMetrics
from workers.runtime.connections import (
    TRANSIENT,
)
from workers.runtime.consumer import (
    FIRST_RETRY_SECONDS,
    Batch,
    BatchStopped,
    ConsumerSettings,
    PartitionConsumer,
)
from workers.runtime.leases import LeaseLost

log = logging.getLogger("gelombang.drain")

# Outbox rows relayed per refill transaction: each holds a batch's ids
# (drain.batch_size, 500 by default), so 20 rows are ~10,000 jobs at most.
REFILL_ROWS: Final = 20



@dataclass(slots=True)
class DeadLetter:
    """An entry that will not be stored, and why."""

    entry_id: bytes
    reason: str
    deliveries: int
    payload: bytes | None


@dataclass(slots=True)
class DrainStats:
    """What this process did, for its heartbeat."""

    batches: int = 0
    stored: int = 0
    dead_letters: int = 0
    started_at: float = field(default_factory=time.time)


class DrainWorker:
    """One worker process's drain: the ordered consumer, the outbox refill, the audit archive."""

    def __init__(self, settings: Settings, redis: RedisClient, pool: asyncpg.Pool,
                 name: str | None = None, metrics: WorkerMetrics | None = None) -> None:
        self.settings: DrainSettings = settings.drain
        self.metrics = metrics
        self.redis = redis
        self.pool = pool
        self.stats = DrainStats()
        partition_count = settings.queue.partitions
        self.consumer = PartitionConsumer(
            redis, ConsumerSettings(
                role="drain", group=STORE_GROUP, batch_size=self.settings.batch_size,
                block_ms=self.settings.block_ms,
                claim_idle_seconds=self.settings.claim_idle_seconds,
                slots=self.settings.concurrency or partition_count,
                heartbeat_seconds=self.settings.heartbeat_seconds,
                retry_max_seconds=self.settings.retry_max_seconds, ordered=True),
            lambda partition: partition.stream, self, partition_count, name, metrics)
        self.name = self.consumer.name
        self._refusals = RefusalCounts(redis)
        self._handoff = Handoff(redis, self.settings.handoff_marker_seconds,
                                self.settings.verification_window)
        # Outbox rows whose jobs reached Redis: deleted by the next batch's
        # statement (no round trip or commit of their own), or when idle. One
        # left behind by a crash is relayed again by a refill, adding nothing.
        self._relayed: list[int] = []

    @property
    def stopping(self) -> asyncio.Event:
        """Set it to stop: the batch in hand is finished (or left pending) first."""
        return self.consumer.stopping

    async def run(self) -> None:
        """Drain until `stopping` is set; the batch in hand is finished first."""
        # Both only delay work that waits safely meanwhile (outbox rows, audit
        # entries the stream keeps until archived): restarted, never fatal to
        # the drain, whose batches must go on.
        helpers = Supervisor()
        helpers.start("outbox refill", self._refill, "restart")
        helpers.start("audit archive", self._archive_audit, "restart")
        log.info("drain worker %s started: %d partitions, %d slots", self.name,
                 len(self.consumer.partitions), self.consumer.settings.slots)
        try:
            await self.consumer.run()
        finally:
            await helpers.close()
            await self._forget_relayed()
        log.info("drain worker %s stopped", self.name)

    # -- the runtime's handler ------------------------------------------------

    def heartbeat_fields(self) -> dict[str, str | int | float]:
        """What `worker status` shows of this process."""
        return {"batches": self.stats.batches, "stored": self.stats.stored,
                "dead_letters": self.stats.dead_letters}

    async def idle(self, partition: Partition) -> None:
        """Nothing new: delete the relayed outbox rows no batch will delete."""
        await self._forget_relayed()

    async def handle(self, batch: Batch) -> None:
        """Store the batch in order, hand its jobs off, acknowledge; through any outage.

        A run of entries PostgreSQL refuses is halved until the refused entry
        stands alone, its neighbours stored around it in order; that entry is
        tried again, each refusal counted (workers/drain/refusals.py), and
        dead-lettered at the `max_refusals`-th. Nothing else counts: however
        often the batch is read, reclaimed or taken over, it is stored.
        """
        partition = batch.partition
        dead: list[DeadLetter] = []
        envelopes: list[tuple[bytes, Envelope]] = []
        for entry_id, fields in batch.entries:
            payload = fields.get(STREAM_FIELD)
            try:
                if payload is None:
                    raise EnvelopeError("entry has no envelope field")
                envelopes.append((entry_id, Envelope.decode(payload)))
            except EnvelopeError as exc:
                dead.append(DeadLetter(entry_id, f"undecodable: {exc}", 1, payload))
        counted = await self._store_in_order(batch, envelopes, dead)
        if dead:
            await self._attempt(batch, [], dead)
        await self.consumer.acknowledge(batch, [entry_id for entry_id, _ in batch.entries])
        if counted:
            await self.consumer.until_done(lambda: self._refusals.forget(partition, counted),
                                           f"partition {partition.index}: refusal counts")

    async def _store_in_order(self, batch: Batch, envelopes: list[tuple[bytes, Envelope]],
                              dead: list[DeadLetter]) -> list[bytes]:
        """Store every envelope or dead-letter it (into `dead`); the ids whose refusals
        were counted."""
        partition = batch.partition
        counted: list[bytes] = []
        runs = deque([envelopes] if envelopes else [])
        while runs:
            run = runs.popleft()
            try:
                await self._attempt(batch, run, dead)
                continue
            except Refused as refused:
                why = refused.why
            if len(run) > 1:
                # Halves, first half first: intake order holds, and one bad entry
                # costs its neighbours about 2 log2(batch) statements, no refusal.
                half = len(run) // 2
                runs.extendleft((run[half:], run[:half]))
                continue
            entry_id, envelope = run[0]
            times = await self.consumer.until_done(
                functools.partial(self._refusals.add, partition, entry_id),
                f"partition {partition.index}: counting a refusal")
            counted.append(entry_id)
            if times >= self.settings.max_refusals:
                dead.append(DeadLetter(entry_id, f"refused {times} times by PostgreSQL ({why})",
                                       times, envelope.encode()))
                continue
            delay = min(FIRST_RETRY_SECONDS * 2 ** (times - 1), self.settings.retry_max_seconds)
            log.warning("partition %d: an entry refused (%s, %d of %d); again in %.1f s",
                        partition.index, why, times, self.settings.max_refusals, delay)
            if await self.consumer.sleep_or_stop(delay):
                raise BatchStopped  # its count is kept in Redis for the next holder
            runs.appendleft(run)
        return counted

    async def _attempt(self, batch: Batch, run: list[tuple[bytes, Envelope]],
                       dead: list[DeadLetter]) -> None:
        """Store the run (and the dead letters in hand) until it is done or refused.

        Raises Refused when PostgreSQL refused the run, LeaseLost when a newer
        holder of the lease has written, BatchStopped when the worker stops
        first; anything else is waited out with back-off.
        """
        partition = batch.partition
        delay = FIRST_RETRY_SECONDS
        while True:
            try:
                await self._store(batch, [envelope for _, envelope in run], dead)
                return
            except (Refused, LeaseLost):
                raise
            except TRANSIENT as exc:
                log.warning("partition %d: %d entries not stored yet (%s); again in %.1f s",
                            partition.index, len(run), type(exc).__name__, delay)
            except Exception as exc:
                # Not the entries' fault (a read-only standby, a missing table, a
                # failure after the commit): waited out, never counted against them.
                # The type and SQLSTATE only: a message could quote data.
                log.error("partition %d: %d entries not stored (%s %s); again in %.1f s",
                          partition.index, len(run), type(exc).__name__,
                          getattr(exc, "sqlstate", ""), delay)
            if await self.consumer.sleep_or_stop(delay):
                raise BatchStopped  # entries stay pending; the next holder takes them
            delay = min(delay * 2, self.settings.retry_max_seconds)

    async def _store(self, batch: Batch, envelopes: list[Envelope],
                     dead: list[DeadLetter]) -> None:
        partition = batch.partition
        async with self.pool.acquire() as connection:
            if dead:
                await self._dead_letter(connection, batch, dead)
            if envelopes:
                relayed, self._relayed = self._relayed, []
                try:
                    result = await store_batch(connection, partition.index,
                                               random.randrange(COUNTER_SHARDS), envelopes,
                                               relayed, batch.epoch)
                except BaseException as exc:
                    self._relayed.extend(relayed)  # not deleted: the next batch tries
                    refused = refusal(exc)
                    if refused is not None:
                        raise refused from None
                    raise
                self.stats.batches += 1
                self.stats.stored += result.stored
                if self.metrics is not None:
                    for state in STATES:
                        self.metrics.jobs(state, result.counts[state])
                if result.handoff is None:
                    return
                try:
                    handed = await self._handoff.relay([result.handoff])
                except TRANSIENT as exc:
                    # The jobs are safe in the outbox; the refill relays them.
                    log.warning("partition %d: hand-off deferred (%s)", partition.index,
                                type(exc).__name__)
                    return
                if handed.complete():
                    self._relayed.append(result.handoff.handoff_id)
                elif any(any(kinds) for kinds in handed.waiting().values()):
                    # One kind relayed, the other's stream full: remember which,
                    # so the refill never relays it twice (its marker expires).
                    await mark_handoffs(connection, handed.waiting())

    async def _dead_letter(self, connection: Connection, batch: Batch,
                           dead: list[DeadLetter]) -> None:
        # PostgreSQL first: the table is the record; the stream is for operators.
        partition = batch.partition
        async with connection.transaction():
            # A worker whose lease a newer holder has written under records nothing.
            await fence(connection, partition.index, batch.epoch)
            added = 0
            for letter in dead:
                row = await connection.fetchval(
                    QUERIES["insert_dead_letter"], partition.stream, letter.entry_id.decode(),
                    letter.reason, letter.deliveries, letter.payload,
                )
                added += row is not None
            await add_counts(connection, random.randrange(COUNTER_SHARDS),
                             Counter({"dead_letter": added}))
        async with self.redis.pipeline(transaction=False) as pipe:
            for letter in dead:
                fields: dict[Any, Any] = {
                    "entry": letter.entry_id, "reason": letter.reason,
                    "deliveries": letter.deliveries, "m": letter.payload or b""}
                _ = pipe.xadd(partition.dead_letters, fields)
            await pipe.execute()
        self.stats.dead_letters += len(dead)
        if self.metrics is not None:
            self.metrics.jobs("dead_letter", len(dead))
            self.metrics.dead_letters(len(dead))
        log.warning("partition %d: %d entries dead-lettered", partition.index, len(dead))
        dead.clear()

    async def _forget_relayed(self) -> None:
        """Delete the relayed outbox rows no batch has deleted yet (idle, or stopping)."""
        if not self._relayed:
            return
        relayed, self._relayed = self._relayed, []
        try:
            async with self.pool.acquire() as connection:
                await forget_handoffs(connection, relayed)
        except BaseException as exc:
            self._relayed.extend(relayed)
            if not isinstance(exc, TRANSIENT):
                raise
            # Kept for the next try; if this worker stops first, a refill
            # relays the rows again (adding nothing) and deletes them.
            log.warning("relayed outbox rows not deleted yet (%s)", type(exc).__name__)

    async def _refill(self) -> None:
        """Relay outbox rows into the verification streams that have room: rows the
        window held back, and rows whose worker died between commit and hand-off."""
        every = self.settings.outbox_sweep_seconds
        while not self.stopping.is_set():
            if await self.consumer.sleep_or_stop(every * random.uniform(0.8, 1.2)):
                return
            try:
                email_room, nik_room = await self._room()
                if not email_room and not nik_room:
                    continue
                async with self.pool.acquire() as connection:
                    while not self.stopping.is_set():
                        relayed = await refill(connection, self._handoff, email_room, nik_room,
                                               every, REFILL_ROWS)
                        if not relayed.added:
                            break
            except TRANSIENT as exc:
                log.warning("outbox refill failed (%s)", type(exc).__name__)

    async def _room(self) -> tuple[list[int], list[int]]:
        """The partitions whose email and whose NIK stream are below the window."""
        window = self.settings.verification_window
        indexes = [partition.index for partition in self.consumer.partitions]
        if not window:
            return indexes, indexes
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition in self.consumer.partitions:
                for kind in KINDS:
                    _ = pipe.xlen(partition.verification(kind))
            lengths = await pipe.execute()
        email, nik = lengths[0::2], lengths[1::2]
        return ([i for i, length in zip(indexes, email, strict=True) if length < window],
                [i for i, length in zip(indexes, nik, strict=True) if length < window])

    async def _archive_audit(self) -> None:
        """Copy admin audit entries from Redis into PostgreSQL."""
        while not self.stopping.is_set():
            try:
                await audit_archive.ensure_group(self.redis)
                while not self.stopping.is_set():
                    await audit_archive.archive_once(
                        self.redis, self.pool, self.name, count=100,
                        block_ms=self.settings.block_ms,
                        claim_idle_ms=int(self.settings.claim_idle_seconds * 1000))
            except TRANSIENT as exc:
                log.warning("audit archive failed (%s)", type(exc).__name__)
                await self.consumer.sleep_or_stop(1.0)
