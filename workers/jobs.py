"""Consuming verification jobs: one kind (email or NIK) from every partition.

The drain hands each accepted registration's jobs to
`gelombang:{pN}:verify:<kind>` (workers/handoff.py). A `JobConsumer` reads
them through one consumer group per stream, runs the handler on each job
with bounded concurrency, and acknowledges and deletes a job once the
handler returns. A handler owns its retries (back-off, circuit breaker):
while it works, the consumer keeps the job's idle time fresh (XCLAIM
JUSTID), so only the jobs of a dead worker are reclaimed by another, after
`claim_idle_seconds`. A job whose handler raises is left pending and
retried after that idle time; one delivered more than `max_deliveries`
times, or malformed, goes to the partition's dead stream with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import ResponseError

from queueing.keys import Partition, partitions
from queueing.redis_client import RedisClient
from workers.drain import TRANSIENT, consumer_name
from workers.handoff import JOB_FIELD

log = logging.getLogger("gelombang.jobs")

READ_BLOCK_MS: Final = 1000


@dataclass(frozen=True, slots=True)
class JobSettings:
    """How a consumer of one job kind behaves."""

    concurrency: int
    claim_idle_seconds: float
    max_deliveries: int


@dataclass(frozen=True, slots=True)
class VerificationJob:
    """One job: verify this registration's email or NIK."""

    registration_id: uuid.UUID
    partition: int
    entry_id: bytes
    deliveries: int


Handler = Callable[[VerificationJob], Awaitable[None]]


class JobAbandoned(Exception):
    """Raised by a handler that gave up on a job: dead-lettered with this reason."""


class JobDeferred(Exception):
    """Raised by a handler stopping mid-job (shutdown): the job stays pending, quietly."""


class JobConsumer:
    """Runs a handler on every job of one kind, at most `concurrency` at once."""

    def __init__(self, redis: RedisClient, kind: str, handler: Handler, settings: JobSettings,
                 partition_count: int, name: str | None = None) -> None:
        self.redis = redis
        self.kind = kind
        self.group = f"verify-{kind}"
        self.handler = handler
        self.settings = settings
        self.partitions = partitions(partition_count)
        self.name = name or consumer_name()
        self.stopping = asyncio.Event()
        self.handled = 0
        self._slots = asyncio.Semaphore(settings.concurrency)
        # (stream, entry id): ids are only unique within a stream, and two
        # partitions' streams often hold the same id (jobs added in one millisecond).
        self._in_hand: set[tuple[str, bytes]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Consume until `stopping` is set, then let the jobs in hand finish."""
        await self._ensure_groups()
        loops = [asyncio.create_task(self._consume(p)) for p in self.partitions]
        keeper = asyncio.create_task(self._keep_fresh())
        try:
            await asyncio.gather(*loops)
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            for task in (*loops, keeper):
                task.cancel()
            await asyncio.gather(*loops, keeper, return_exceptions=True)

    async def _ensure_groups(self) -> None:
        while not self.stopping.is_set():
            try:
                for partition in self.partitions:
                    try:
                        await self.redis.xgroup_create(partition.verification(self.kind),
                                                       self.group, id="0", mkstream=True)
                    except ResponseError as exc:
                        if "BUSYGROUP" not in str(exc):
                            raise
                return
            except TRANSIENT as exc:
                log.warning("%s jobs: cannot create groups yet (%s)", self.kind,
                            type(exc).__name__)
                await self._sleep_or_stop(1.0)

    async def _consume(self, partition: Partition) -> None:
        stream = partition.verification(self.kind)
        consumer = f"{self.name}-p{partition.index}"
        next_claim = 0.0
        while not self.stopping.is_set():
            await self._slots.acquire()
            started = False
            try:
                entries: list[tuple[bytes, dict[bytes, bytes], int]] = []
                if time.monotonic() >= next_claim:
                    entries = await self._reclaim(stream, consumer)
                    next_claim = time.monotonic() + self.settings.claim_idle_seconds / 2
                if not entries:
                    reply: Any = await self.redis.xreadgroup(
                        self.group, consumer, {stream: ">"}, count=1, block=READ_BLOCK_MS)
                    entries = [(i, f, 1) for i, f in reply[0][1]] if reply else []
                for entry_id, fields, deliveries in entries:
                    started = True
                    self._start(partition, entry_id, fields, deliveries)
            except TRANSIENT as exc:
                log.warning("%s jobs, partition %d: read failed (%s)", self.kind,
                            partition.index, type(exc).__name__)
                await self._sleep_or_stop(1.0)
            finally:
                if not started:
                    self._slots.release()

    async def _reclaim(self, stream: str, consumer: str
                       ) -> list[tuple[bytes, dict[bytes, bytes], int]]:
        idle_ms = int(self.settings.claim_idle_seconds * 1000)
        pending: Any = await self.redis.xpending_range(
            stream, self.group, min="-", max="+", count=self.settings.concurrency + 1,
            idle=idle_ms)
        # A job this worker still holds looks idle when the keeper fell behind
        # (a loaded machine): running it a second time here would call the
        # ministry or send the mail twice. At most `concurrency` are in hand, so
        # one more than that is enough to find another.
        chosen = next((p for p in pending if (stream, p["message_id"]) not in self._in_hand),
                      None)
        if chosen is None:
            return []
        deliveries = {chosen["message_id"]: int(chosen["times_delivered"]) + 1}
        claimed: Any = await self.redis.xclaim(stream, self.group, consumer,
                                               min_idle_time=idle_ms,
                                               message_ids=list(deliveries))
        return [(entry_id, fields, deliveries.get(entry_id, 1))
                for entry_id, fields in claimed if fields is not None]

    def _start(self, partition: Partition, entry_id: bytes, fields: dict[bytes, bytes],
               deliveries: int) -> None:
        self._in_hand.add((partition.verification(self.kind), entry_id))
        task = asyncio.create_task(self._run_job(partition, entry_id, fields, deliveries))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_job(self, partition: Partition, entry_id: bytes, fields: dict[bytes, bytes],
                       deliveries: int) -> None:
        stream = partition.verification(self.kind)
        try:
            raw = fields.get(JOB_FIELD)
            if raw is None or len(raw) != 16:
                await self._dead_letter(partition, entry_id, fields, "malformed job")
            elif deliveries > self.settings.max_deliveries:
                await self._dead_letter(partition, entry_id, fields,
                                        f"delivered {deliveries - 1} times without finishing")
            else:
                try:
                    await self.handler(VerificationJob(uuid.UUID(bytes=raw), partition.index,
                                                       entry_id, deliveries))
                except JobAbandoned as exc:
                    await self._dead_letter(partition, entry_id, fields, str(exc))
            async with self.redis.pipeline(transaction=True) as pipe:
                _ = pipe.xack(stream, self.group, entry_id)
                _ = pipe.xdel(stream, entry_id)
                await pipe.execute()
            self.handled += 1
        except JobDeferred:
            pass  # reclaimed after claim_idle_seconds, by this worker's successor or another
        except Exception as exc:
            # Left pending: retried after claim_idle_seconds (by anyone), and
            # dead-lettered once delivered too often. Type only: a message
            # could quote personal data.
            log.error("%s job failed (%s); it stays pending", self.kind, type(exc).__name__)
        finally:
            self._in_hand.discard((stream, entry_id))
            self._slots.release()

    async def _dead_letter(self, partition: Partition, entry_id: bytes,
                           fields: dict[bytes, bytes], reason: str) -> None:
        await self.redis.xadd(partition.dead_letters, {
            "entry": entry_id, "stream": partition.verification(self.kind), "reason": reason,
            "r": fields.get(JOB_FIELD, b"")})
        log.warning("%s job dead-lettered: %s", self.kind, reason)

    async def _keep_fresh(self) -> None:
        """Reset the idle time of jobs in hand, so no other worker reclaims them."""
        every = self.settings.claim_idle_seconds / 3
        while True:
            await asyncio.sleep(every)
            by_stream: dict[str, list[bytes]] = {}
            for stream, entry_id in list(self._in_hand):
                by_stream.setdefault(stream, []).append(entry_id)
            for stream, ids in by_stream.items():
                try:
                    await self.redis.xclaim(stream, self.group, f"{self.name}-keeper",
                                            min_idle_time=0, message_ids=list[Any](ids),
                                            justid=True)
                except TRANSIENT:
                    pass

    async def _sleep_or_stop(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True
