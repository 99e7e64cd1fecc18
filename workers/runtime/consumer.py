"""The worker runtime: one consumer group over every partition's stream, in batches.

A `PartitionConsumer` runs a loop per partition. A loop takes a batch slot,
makes sure its process holds the partition's lease (workers/runtime/leases.py),
then reclaims what a dead or stopped worker left pending (`XAUTOCLAIM`, in
batches) or reads up to `batch_size` new entries (`XREADGROUP COUNT`), and
hands the batch to the role's handler. The handler stores, sends or asks,
and acknowledges what is finished (`acknowledge`: one script call, which
also trims the stream).

Two ways to run batches:
- ordered (the drain): a partition's batches one after another, in the loop,
  and a partition just taken over first takes every entry its last holder
  left pending, idle or not, so entries are stored in order;
- concurrent (verification): a loop hands its batch to a task and reads the
  next while slots last; entries in hand are kept from being reclaimed by
  renewing their idle time, and a stopping worker marks what it did not
  finish idle, so the next holder takes it at once.

Transient failures (Redis, PostgreSQL, an outside service down) never cost
an entry: the handler keeps the batch in hand and retries with back-off
(`until_done`), the entries' idle time and the lease being renewed
meanwhile, and no delivery is counted. A worker told to stop leaves what it
has not finished pending (`BatchStopped`), never lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from redis.exceptions import ResponseError

from queueing.keys import Partition, partitions
from queueing.redis_client import RedisClient
from queueing.supervision import Supervisor
from workers.metrics import WorkerMetrics
from workers.runtime.acknowledge import Acknowledger
from workers.runtime.connections import TRANSIENT, consumer_name
from workers.runtime.heartbeat import Heartbeat, measure_backlog
from workers.runtime.in_hand import InHand
from workers.runtime.leases import LeaseLost, PartitionLeases

log = logging.getLogger("gelombang.runtime")

StreamEntry = tuple[bytes, dict[bytes, bytes]]
T = TypeVar("T")

# First wait after a transient failure; it doubles up to the role's ceiling.
FIRST_RETRY_SECONDS: Final = 0.1


class BatchStopped(Exception):
    """The worker is stopping: the batch's unfinished entries stay pending."""


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """How one role consumes its streams."""

    role: str  # names its leases and heartbeats: "drain", "email", "nik"
    group: str
    batch_size: int
    block_ms: int
    claim_idle_seconds: float
    slots: int  # batches in hand at once in this process
    heartbeat_seconds: float
    retry_max_seconds: float
    # One batch per partition at a time, and a partition taken over starts
    # with everything pending (the drain stores in intake order).
    ordered: bool = False


@dataclass(slots=True)
class Batch:
    """Entries of one partition's stream, in hand until acknowledged."""

    partition: Partition
    stream: str
    consumer: str
    entries: list[StreamEntry]
    # Taken over from another consumer (a dead or stopped worker's): what the
    # role's outside service may already have done for them is worth a look.
    reclaimed: bool
    # The partition lease's epoch it was read under (fencing: workers/runtime/leases.py).
    epoch: int = 0
    # The consumer that read it (a role may run several: a backlog and a priority lane).
    owner: PartitionConsumer | None = None


class BatchHandler(Protocol):
    """A role's work on one batch; it acknowledges what it finished."""

    async def handle(self, batch: Batch) -> None:
        """Do the batch's work (raise BatchStopped to leave the rest pending)."""

    async def idle(self, partition: Partition) -> None:
        """Called when a read found nothing new."""

    def heartbeat_fields(self) -> Mapping[str, str | int | float]:
        """What this process reports beside its heartbeat."""


class PartitionConsumer:
    """One role's loops over every partition, its leases, heartbeats and keeper."""

    def __init__(self, redis: RedisClient, settings: ConsumerSettings,
                 stream_of: Callable[[Partition], str], handler: BatchHandler,
                 partition_count: int, name: str | None = None,
                 metrics: WorkerMetrics | None = None,
                 stopping: asyncio.Event | None = None) -> None:
        self.redis = redis
        self.metrics = metrics
        self.settings = settings
        self.stream_of = stream_of
        self.handler = handler
        self.partitions = partitions(partition_count)
        self.name = name or consumer_name()
        # Shared by the consumers of one process, so one signal stops them all.
        self.stopping = stopping or asyncio.Event()
        self._slots = asyncio.Semaphore(settings.slots)
        self._acknowledger = Acknowledger(redis)
        self.leases = PartitionLeases(redis, self.name, partition_count,
                                      settings.claim_idle_seconds, settings.role)
        # Entries in hand, by stream: kept fresh, never reclaimed by this
        # process a second time, released idle at a stop.
        self._in_hand = InHand(redis, settings.group, self.name, self.leases)
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Consume until `stopping` is set; batches in hand finish or stay pending."""
        await self._ensure_groups()
        loops = [asyncio.create_task(self._consume(p), name=f"{self.settings.role}-{p.index}")
                 for p in self.partitions]
        heartbeat = Heartbeat(self.redis, self.settings.role, self.name, self.settings.
                              heartbeat_seconds, self.handler.heartbeat_fields)
        # Fatal when they fail (they catch what is transient): without its beat
        # the process looks dead and its partitions are handed out; without the
        # keeper its entries in hand are reclaimed while it works on them. A
        # process that cannot keep those promises stops (and is restarted by
        # whoever runs it), finishing or releasing what it holds.
        helpers = Supervisor(on_stop=self.stopping.set)
        helpers.start(f"{self.settings.role} heartbeat", lambda: self._beat(heartbeat), "stop")
        # Three times per claim_idle_seconds: a late renewal is not yet a reclaim.
        helpers.start(f"{self.settings.role} keeper",
                      lambda: self._in_hand.keep(self.settings.claim_idle_seconds / 3), "stop")
        try:
            await asyncio.gather(*loops)
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            for task in (*loops, *self._tasks):
                task.cancel()
            await asyncio.gather(*loops, *self._tasks, return_exceptions=True)
            await helpers.close()
            await self._in_hand.release(int(self.settings.claim_idle_seconds * 1000) + 1)
            await self._give_up_leases()
            await heartbeat.forget()
        helpers.check()

    # -- for handlers ------------------------------------------------------

    async def acknowledge(self, batch: Batch, entry_ids: list[bytes]) -> None:
        """Acknowledge (and trim) finished entries; retried through a Redis outage."""
        if batch.owner is not None and batch.owner is not self:
            await batch.owner.acknowledge(batch, entry_ids)
            return
        if not entry_ids:
            return
        await self.until_done(
            lambda: self._acknowledger.acknowledge_in(batch.stream, self.settings.group,
                                                      entry_ids),
            f"{self.settings.role}: acknowledging {len(entry_ids)} entries")
        self._in_hand.drop(batch.stream, entry_ids)

    async def until_done(self, step: Callable[[], Awaitable[T]], what: str) -> T:
        """Run `step` until it succeeds, waiting out transient failures with back-off.

        The batch stays in hand meanwhile (the keeper renews its entries and
        the lease). Raises BatchStopped when the worker stops first.
        """
        delay = FIRST_RETRY_SECONDS
        while True:
            try:
                return await step()
            except TRANSIENT as exc:
                log.warning("%s: not done yet (%s); again in %.1f s", what,
                            type(exc).__name__, delay)
            if await self.sleep_or_stop(delay):
                raise BatchStopped
            delay = min(delay * 2, self.settings.retry_max_seconds)

    async def sleep_or_stop(self, seconds: float) -> bool:
        """Sleep, waking early on stop; True when stopping."""
        if self.stopping.is_set():
            return True
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    # -- the loops ---------------------------------------------------------

    async def _ensure_groups(self) -> None:
        # Even when told to stop at once: the groups exist after any run.
        while True:
            try:
                for partition in self.partitions:
                    try:
                        # From the stream's start: entries added before any
                        # worker existed are consumed too.
                        await self.redis.xgroup_create(self.stream_of(partition),
                                                       self.settings.group, id="0",
                                                       mkstream=True)
                    except ResponseError as exc:
                        if "BUSYGROUP" not in str(exc):
                            raise
                return
            except TRANSIENT as exc:
                log.warning("%s: cannot create consumer groups yet (%s)", self.settings.role,
                            type(exc).__name__)
                if await self.sleep_or_stop(1.0):
                    return

    async def _consume(self, partition: Partition) -> None:
        consumer = f"{self.name}-p{partition.index}"
        stream = self.stream_of(partition)
        next_claim = 0.0
        leased, epoch = False, 0
        while not self.stopping.is_set():
            await self._slots.acquire()
            handed_over = False
            try:
                if self.stopping.is_set():
                    # The slot came free at a stop: no further read (each one
                    # could block for block_ms).
                    break
                # The lease is checked with a slot in hand, right before the
                # read: a wait for a slot can outlast it.
                if await self._hold(partition):
                    # Taken anew, whether or not this loop saw it go: the lease
                    # can expire and be taken again while a batch waits.
                    held = self.leases.epochs.get(partition.index, 0)
                    taken_over, leased, epoch = not leased or held != epoch, True, held
                    batch = await self._next_batch(partition, stream, consumer, next_claim,
                                                   taken_over)
                    if batch is None:  # Redis failed: a retry takes over again
                        leased, next_claim = False, 0.0
                        continue
                    found, next_claim = batch
                    if found is not None:
                        found.epoch = epoch
                        self._track(found)
                        if self.settings.ordered:
                            await self._run(found)
                            leased = partition.index in self.leases.held
                        else:
                            handed_over = self._spawn(found)
                    continue
            finally:
                if not handed_over:
                    self._slots.release()
            leased = False
            await self.sleep_or_stop(self.settings.block_ms / 1000)

    async def _hold(self, partition: Partition) -> bool:
        try:
            return await self.leases.hold(partition)
        except TRANSIENT as exc:
            log.warning("%s, partition %d: lease unknown (%s)", self.settings.role,
                        partition.index, type(exc).__name__)
            return False

    async def _next_batch(self, partition: Partition, stream: str, consumer: str,
                          next_claim: float, taken_over: bool
                          ) -> tuple[Batch | None, float] | None:
        """Reclaim (when due) or read one batch; with the next reclaim's time.

        None when Redis failed (after a pause)."""
        ordered = self.settings.ordered
        try:
            batch: Batch | None = None
            if (ordered and taken_over) or time.monotonic() >= next_claim:
                batch = await self._reclaim(partition, stream, consumer,
                                            any_idle=ordered and taken_over)
                next_claim = time.monotonic() + self.settings.claim_idle_seconds / 2
            if batch is None:
                reply: Any = await self.redis.xreadgroup(
                    self.settings.group, consumer, {stream: ">"},
                    count=self.settings.batch_size, block=self.settings.block_ms)
                entries = list(reply[0][1]) if reply else []
                if entries:
                    batch = Batch(partition, stream, consumer, entries, reclaimed=False,
                                  owner=self)
                else:
                    await self.handler.idle(partition)
        except TRANSIENT as exc:
            log.warning("%s, partition %d: read failed (%s)", self.settings.role,
                        partition.index, type(exc).__name__)
            await self.sleep_or_stop(1.0)
            return None
        return batch, next_claim

    async def _reclaim(self, partition: Partition, stream: str, consumer: str, *,
                       any_idle: bool) -> Batch | None:
        """Take over entries idle too long with another consumer (a dead worker's, or
        one a stopping worker released); with `any_idle`, every pending entry."""
        idle_ms = 0 if any_idle else int(self.settings.claim_idle_seconds * 1000)
        # XAUTOCLAIM checks the idle time as it claims, so two workers never
        # both take one; it scans the pending list from the start (at most ten
        # times COUNT ids per call).
        reply: Any = await self.redis.xautoclaim(
            stream, self.settings.group, consumer, min_idle_time=idle_ms, start_id="0-0",
            count=self.settings.batch_size)
        in_hand = self._in_hand.of(stream)
        # Entries trimmed meanwhile come back without fields: nothing is left.
        # One still in this process's hand looked idle because the keeper fell
        # behind (a loaded machine): it is being worked on already.
        claimed = [(entry_id, fields) for entry_id, fields in reply[1]
                   if fields is not None and entry_id not in in_hand]
        if not claimed:
            return None
        log.info("%s, partition %d: reclaimed %d entries", self.settings.role, partition.index,
                 len(claimed))
        # Delivery counts are not read: a takeover (a restart, a rollout, a lease
        # expiring during an outage) adds one each time, and says nothing of the entry.
        return Batch(partition, stream, consumer, claimed, reclaimed=True, owner=self)

    def _track(self, batch: Batch) -> None:
        self._in_hand.add(batch.stream, batch.partition,
                          [entry_id for entry_id, _ in batch.entries])

    def _spawn(self, batch: Batch) -> bool:
        """Run the batch in a task that holds the loop's slot until it ends."""
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._slots.release())
        return True

    async def _run(self, batch: Batch) -> None:
        started = time.monotonic()
        try:
            await self.handler.handle(batch)
            if self.metrics is not None:
                self.metrics.batch(len(batch.entries), time.monotonic() - started)
        except BatchStopped:
            return  # left pending; released idle at the stop
        except LeaseLost:
            # A newer holder wrote first: its batch now, reclaimed by it (or by
            # this worker, once it takes the lease again). Nothing is counted.
            log.warning("%s, partition %d: lease lost to a newer holder; batch left to it",
                        self.settings.role, batch.partition.index)
            self.leases.lost(batch.partition)
        except Exception as exc:
            # Unforeseen (a bug): the entries stay pending and are taken again
            # after claim_idle_seconds. The type only: a message could quote data.
            log.error("%s, partition %d: batch failed (%s); its entries stay pending",
                      self.settings.role, batch.partition.index, type(exc).__name__)
        # Whatever the handler did not acknowledge is no longer kept fresh.
        self._in_hand.drop(batch.stream, [entry_id for entry_id, _ in batch.entries])

    # -- keeping entries in hand --------------------------------------------

    async def _beat(self, heartbeat: Heartbeat) -> None:
        """Beat every heartbeat_seconds: the live workers set each lease share; the
        role's backlog goes to the metrics."""
        streams = [self.stream_of(partition) for partition in self.partitions]
        while not self.stopping.is_set():
            try:
                self.leases.set_live_workers(await heartbeat.beat())
                if self.metrics is not None:
                    await measure_backlog(self.redis, streams, self.metrics)
            except TRANSIENT as exc:
                log.warning("%s: heartbeat failed (%s)", self.settings.role, type(exc).__name__)
            if await self.sleep_or_stop(self.settings.heartbeat_seconds):
                return

    async def _give_up_leases(self) -> None:
        """Let other workers take this one's partitions now, not when the leases expire."""
        try:
            await self.leases.give_up_all()
        except TRANSIENT as exc:
            log.warning("%s: leases not given up (%s); they expire", self.settings.role,
                        type(exc).__name__)
