"""The drain: intake streams into PostgreSQL, exactly once.

One consumer group (`store`) per partition stream. Each partition has a
loop in every worker process, which reads only while its process holds the
partition's lease (workers/leases.py), so one process at a time stores a
partition, in order; the loops share `concurrency` slots, and a loop takes
a slot before it reads, so a process never holds more batches than it can
store. A batch is stored in one statement (workers/store.py), its
verification jobs handed off, and only then acknowledged and trimmed from
the stream (workers/acknowledge.py), so Redis memory stays bounded by the
backlog.

Failures: while PostgreSQL or Redis is down the batch stays in hand and is
retried with back-off (its entries stay pending, and their idle time and
the lease are renewed so no other worker takes them over meanwhile).
Entries a dead worker left pending are taken by the next holder of its
partition's lease, and reclaimed after `claim_idle_seconds` anyway; one delivered
`max_deliveries` times, or one that cannot be decoded, goes to the dead
letters with its reason and never blocks its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
from redis.exceptions import ResponseError

from config.settings import DrainSettings, Settings
from queueing.envelope import STREAM_FIELD, Envelope
from queueing.errors import EnvelopeError
from queueing.keys import HEARTBEATS, STORE_GROUP, Partition, heartbeat_details, partitions
from queueing.redis_client import RedisClient
from workers import audit_archive
from workers.handoff import Handoff
from workers.runtime.acknowledge import Acknowledger
from workers.runtime.connections import (
    TRANSIENT,
    consumer_name,
)
from workers.runtime.leases import PartitionLeases
from workers.store import (
    COUNTER_SHARDS,
    QUERIES,
    Connection,
    add_counts,
    forget_handoffs,
    hand_off_stale,
    store_batch,
)

log = logging.getLogger("gelombang.drain")

# Outbox rows relayed per sweeper transaction: each holds a batch's ids
# (drain.batch_size, 500 by default), so 20 rows are ~20,000 jobs at most.
STALE_HANDOFF_LIMIT: Final = 20

StreamEntry = tuple[bytes, dict[bytes, bytes]]


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
    """One worker process's drain: a loop per partition, a heartbeat, an outbox sweeper."""

    def __init__(self, settings: Settings, redis: RedisClient, pool: asyncpg.Pool,
                 name: str | None = None) -> None:
        self.settings: DrainSettings = settings.drain
        self.partitions = partitions(settings.queue.partitions)
        self.redis = redis
        self.pool = pool
        self.name = name or consumer_name()
        self.stats = DrainStats()
        self.stopping = asyncio.Event()
        slots = self.settings.concurrency or len(self.partitions)
        self._slots = asyncio.Semaphore(slots)
        self._handoff = Handoff(redis, self.settings.handoff_marker_seconds)
        # Stored entries leave Redis memory once acknowledged (trimmed).
        self._acknowledger = Acknowledger(redis)
        # One worker at a time stores a partition's batches, in order.
        self._leases = PartitionLeases(redis, self.name, len(self.partitions),
                                       self.settings.claim_idle_seconds)
        # Outbox rows whose jobs reached Redis: deleted by the next batch's
        # statement (no round trip or commit of their own), or when idle. One
        # left behind by a crash is relayed again by a sweeper, adding nothing.
        self._relayed: list[int] = []

    async def run(self) -> None:
        """Drain until `stopping` is set; the batch in hand is finished first."""
        await self._ensure_groups()
        loops = [asyncio.create_task(self._drain(partition), name=f"drain-{partition.index}")
                 for partition in self.partitions]
        helpers = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._sweep()),
                   asyncio.create_task(self._archive_audit())]
        log.info("drain worker %s started: %d partitions, %d slots", self.name,
                 len(self.partitions), self.settings.concurrency or len(self.partitions))
        try:
            await asyncio.gather(*loops)
        finally:
            for task in (*loops, *helpers):
                task.cancel()
            await asyncio.gather(*loops, *helpers, return_exceptions=True)
            await self._forget_relayed()
            await self._give_up_leases()
            await self._forget_heartbeat()
        log.info("drain worker %s stopped", self.name)

    async def _ensure_groups(self) -> None:
        while True:
            try:
                for partition in self.partitions:
                    try:
                        # From the stream's start: entries admitted before any
                        # worker existed are drained too.
                        await self.redis.xgroup_create(partition.stream, STORE_GROUP, id="0",
                                                       mkstream=True)
                    except ResponseError as exc:
                        if "BUSYGROUP" not in str(exc):
                            raise
                return
            except TRANSIENT as exc:
                log.warning("cannot create consumer groups yet (%s); retrying",
                            type(exc).__name__)
                if await self._sleep_or_stop(1.0):
                    return

    async def _drain(self, partition: Partition) -> None:
        consumer = f"{self.name}-p{partition.index}"
        next_claim = 0.0
        leased = False
        while not self.stopping.is_set():
            async with self._slots:
                # The lease is checked with a slot in hand, right before the
                # read: a wait for a slot can outlast it.
                try:
                    held = await self._leases.hold(partition)
                except TRANSIENT as exc:
                    log.warning("partition %d: lease unknown (%s)", partition.index,
                                type(exc).__name__)
                    held = False
                if held:
                    # Just taken (at start, or from a worker that stopped or
                    # died): what its last holder left pending is stored
                    # first, idle or not, so the entries are stored in order.
                    taken_over, leased = not leased, True
                    claim = await self._drain_once(partition, consumer, next_claim, taken_over)
                    # None: Redis failed; a retry takes over again, as if just leased.
                    leased, next_claim = claim is not None, claim or 0.0
                    continue
            leased = False
            await self._sleep_or_stop(self.settings.block_ms / 1000)

    async def _drain_once(self, partition: Partition, consumer: str, next_claim: float,
                          taken_over: bool) -> float | None:
        """Reclaim (when due) or read one batch, and store it; the next reclaim's
        time, or None when Redis failed (after a pause)."""
        try:
            entries: list[StreamEntry] = []
            dead: list[DeadLetter] = []
            if taken_over or time.monotonic() >= next_claim:
                entries, dead = await self._reclaim(partition, consumer, any_idle=taken_over)
                next_claim = time.monotonic() + self.settings.claim_idle_seconds / 2
            if not entries and not dead:
                entries = await self._read(partition, consumer)
            if not entries and not dead:
                await self._forget_relayed()
        except TRANSIENT as exc:
            log.warning("partition %d: read failed (%s)", partition.index, type(exc).__name__)
            await self._sleep_or_stop(1.0)
            return None
        if entries or dead:
            await self._handle(partition, consumer, entries, dead)
        return next_claim

    async def _read(self, partition: Partition, consumer: str) -> list[StreamEntry]:
        reply: Any = await self.redis.xreadgroup(
            STORE_GROUP, consumer, {partition.stream: ">"},
            count=self.settings.batch_size, block=self.settings.block_ms,
        )
        return list(reply[0][1]) if reply else []

    async def _reclaim(
        self, partition: Partition, consumer: str, *, any_idle: bool = False
    ) -> tuple[list[StreamEntry], list[DeadLetter]]:
        """Take over entries idle too long with another consumer (a dead worker's);
        with `any_idle`, every pending entry (the partition's lease was just taken)."""
        idle_ms = 0 if any_idle else int(self.settings.claim_idle_seconds * 1000)
        # XAUTOCLAIM checks the idle time as it claims, so two workers never
        # both take one; it scans the group's pending list from the start (at
        # most ten times COUNT ids per call) and counts a delivery for each.
        reply: Any = await self.redis.xautoclaim(
            partition.stream, STORE_GROUP, consumer, min_idle_time=idle_ms,
            start_id="0-0", count=self.settings.batch_size,
        )
        # Entries trimmed meanwhile leave the pending list without their
        # fields (Redis 7 lists their ids apart): nothing is left to store.
        claimed = [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]
        if not claimed:
            return [], []
        log.info("partition %d: reclaimed %d idle entries", partition.index, len(claimed))
        pending: Any = await self.redis.xpending_range(
            partition.stream, STORE_GROUP, min=claimed[0][0], max=claimed[-1][0],
            count=len(claimed), consumername=consumer,
        )
        deliveries = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        entries, dead = [], []
        for entry_id, fields in claimed:
            times = deliveries.get(entry_id, 1)
            if times > self.settings.max_deliveries:
                dead.append(DeadLetter(entry_id, f"delivered {times - 1} times without being "
                                       "stored", times - 1, fields.get(STREAM_FIELD)))
            else:
                entries.append((entry_id, fields))
        return entries, dead

    async def _handle(self, partition: Partition, consumer: str,
                      entries: Sequence[StreamEntry], dead: list[DeadLetter]) -> None:
        batch: list[tuple[bytes, Envelope]] = []
        entry_ids = [entry_id for entry_id, _ in entries] + [d.entry_id for d in dead]
        for entry_id, fields in entries:
            payload = fields.get(STREAM_FIELD)
            try:
                if payload is None:
                    raise EnvelopeError("entry has no envelope field")
                batch.append((entry_id, Envelope.decode(payload)))
            except EnvelopeError as exc:
                dead.append(DeadLetter(entry_id, f"undecodable: {exc}", 1, payload))
        one_by_one = False
        delay = 0.1
        touched = time.monotonic()
        while True:
            try:
                if one_by_one:
                    await self._store_singly(partition, batch, dead)
                else:
                    await self._store(partition, [envelope for _, envelope in batch], dead)
                await self._acknowledger.acknowledge(partition, entry_ids)
                return
            except TRANSIENT as exc:
                log.warning("partition %d: batch of %d not stored yet (%s); retrying in %.1f s",
                            partition.index, len(entry_ids), type(exc).__name__, delay)
            except asyncpg.PostgresError as exc:
                # Not an outage: something in the batch is refused. Store the
                # entries one by one so only the bad one is dead-lettered.
                log.error("partition %d: batch refused (SQLSTATE %s); storing one by one",
                          partition.index, exc.sqlstate)
                one_by_one = True
                continue
            except Exception as exc:
                # Unforeseen: keep the entries pending and the loop alive; the
                # type (never the message, which could quote data) goes to the log.
                log.error("partition %d: batch failed (%s); retrying in %.1f s",
                              partition.index, type(exc).__name__, delay)
            if await self._sleep_or_stop(delay):
                return  # entries stay pending; another worker reclaims them
            delay = min(delay * 2, self.settings.retry_max_seconds)
            if time.monotonic() - touched > self.settings.claim_idle_seconds / 3:
                touched = time.monotonic()
                await self._touch(partition, consumer, entry_ids)
                with contextlib.suppress(*TRANSIENT):
                    await self._leases.renew(partition)

    async def _store(self, partition: Partition, envelopes: list[Envelope],
                     dead: list[DeadLetter]) -> None:
        async with self.pool.acquire() as connection:
            if dead:
                await self._dead_letter(connection, partition, dead)
            if envelopes:
                relayed, self._relayed = self._relayed, []
                try:
                    result = await store_batch(connection, partition.index,
                                               random.randrange(COUNTER_SHARDS), envelopes,
                                               relayed)
                except BaseException:
                    self._relayed.extend(relayed)  # not deleted: the next batch tries
                    raise
                self.stats.batches += 1
                self.stats.stored += result.stored
                if result.handoff is None:
                    return
                try:
                    await self._handoff.hand_off([result.handoff])
                except TRANSIENT as exc:
                    # The jobs are safe in the outbox; the sweeper relays them.
                    log.warning("partition %d: hand-off deferred (%s)", partition.index,
                                type(exc).__name__)
                else:
                    self._relayed.append(result.handoff.handoff_id)

    async def _store_singly(self, partition: Partition, batch: list[tuple[bytes, Envelope]],
                            dead: list[DeadLetter]) -> None:
        while batch:
            entry_id, envelope = batch[0]
            try:
                await self._store(partition, [envelope], dead)
            except TRANSIENT:
                raise
            except asyncpg.PostgresError as exc:
                dead.append(DeadLetter(entry_id, f"refused by PostgreSQL: SQLSTATE {exc.sqlstate}",
                                       1, envelope.encode()))
            batch.pop(0)
        if dead:
            await self._store(partition, [], dead)

    async def _dead_letter(self, connection: Connection, partition: Partition,
                           dead: list[DeadLetter]) -> None:
        # PostgreSQL first: the table is the record; the stream is for operators.
        stream = partition.stream
        async with connection.transaction():
            added = 0
            for letter in dead:
                row = await connection.fetchval(
                    QUERIES["insert_dead_letter"], stream, letter.entry_id.decode(), letter.reason,
                    letter.deliveries, letter.payload,
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
            # Kept for the next try; if this worker stops first, a sweeper
            # relays the rows again (adding nothing) and deletes them.
            log.warning("relayed outbox rows not deleted yet (%s)", type(exc).__name__)

    async def _give_up_leases(self) -> None:
        """Let other workers take this one's partitions now, not when the leases expire."""
        try:
            await self._leases.give_up_all()
        except TRANSIENT as exc:
            log.warning("leases not given up (%s); they expire", type(exc).__name__)

    async def _touch(self, partition: Partition, consumer: str, entry_ids: list[bytes]) -> None:
        """Reset the entries' idle time (JUSTID adds no delivery), so nobody reclaims them."""
        try:
            await self.redis.xclaim(partition.stream, STORE_GROUP, consumer, min_idle_time=0,
                                    message_ids=list[Any](entry_ids), justid=True)
        except TRANSIENT:
            pass  # Redis is down too: nobody can reclaim them either

    async def _sweep(self) -> None:
        """Relay outbox jobs whose worker died between commit and hand-off."""
        age = self.settings.outbox_sweep_seconds
        while not self.stopping.is_set():
            if await self._sleep_or_stop(age / 2 * random.uniform(0.8, 1.2)):
                return
            try:
                async with self.pool.acquire() as connection:
                    while await hand_off_stale(connection, self._handoff, age,
                                               STALE_HANDOFF_LIMIT) and not self.stopping.is_set():
                        pass
            except TRANSIENT as exc:
                log.warning("outbox sweep failed (%s)", type(exc).__name__)

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
                await self._sleep_or_stop(1.0)

    async def _heartbeat(self) -> None:
        every = self.settings.heartbeat_seconds
        while not self.stopping.is_set():
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    _ = pipe.zadd(HEARTBEATS, {self.name: time.time()})
                    details = heartbeat_details(self.name)
                    _ = pipe.hset(details, mapping={
                        "pid": os.getpid(), "host": socket.gethostname(),
                        "started_at": self.stats.started_at, "batches": self.stats.batches,
                        "stored": self.stats.stored, "dead_letters": self.stats.dead_letters,
                    })
                    _ = pipe.expire(details, int(every * 3) + 1)
                    _ = pipe.zcount(HEARTBEATS, time.time() - every * 3, "+inf")
                    *_, live = await pipe.execute()
                self._leases.set_live_workers(int(live))
            except TRANSIENT as exc:
                log.warning("heartbeat failed (%s)", type(exc).__name__)
            if await self._sleep_or_stop(every):
                return

    async def _forget_heartbeat(self) -> None:
        try:
            await self.redis.zrem(HEARTBEATS, self.name)
            await self.redis.delete(heartbeat_details(self.name))
        except TRANSIENT:
            pass

    async def _sleep_or_stop(self, seconds: float) -> bool:
        """Sleep, waking early on stop; True when stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

