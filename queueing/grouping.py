"""Group commit for admission: one Redis round trip per group of requests.

Each partition has a lane. The first request into an idle lane starts a
round trip on the next loop iteration, so requests that arrived in the same
iteration join it; requests arriving while a round trip is in flight wait
for the next one. Under light load a group is one request and adds no delay;
under heavy load groups grow and the Redis cost per request falls.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from queueing.admission import AdmissionScript, Candidate, Decision, GroupResult, PartitionShare
from queueing.errors import QueueingError, QueueUnavailable
from queueing.keys import Partition


class Overloaded(QueueingError):
    """This process already holds its bound of requests waiting for Redis."""


@dataclass(slots=True)
class GroupStats:
    """Observations of one finished round trip, for metrics."""

    size: int
    seconds: float
    result: GroupResult | None


@dataclass(slots=True)
class _Lane:
    partition: Partition
    waiting: deque[tuple[Candidate, asyncio.Future[Decision]]] = field(default_factory=deque)
    busy: bool = False


class GroupAdmitter:
    """Admits candidates through the admission script, grouped per partition."""

    def __init__(
        self,
        script: AdmissionScript,
        partitions: tuple[Partition, ...],
        share: Callable[[], PartitionShare],
        *,
        group_max: int,
        pending_max: int,
        timeout: float,
        observe: Callable[[GroupStats], None] = lambda stats: None,
    ) -> None:
        self._script = script
        self._lanes = [_Lane(p) for p in partitions]
        self._share = share
        self._group_max = group_max
        self._pending_max = pending_max
        self._timeout = timeout
        self._observe = observe
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Requests waiting for, or inside, a round trip."""
        return self._pending

    async def admit(self, partition_index: int, candidate: Candidate) -> Decision:
        """Wait for admission's decision on one candidate.

        Raises Overloaded when this process is at its bound, QueueUnavailable
        when Redis fails or does not answer within the timeout.
        """
        if self._pending >= self._pending_max:
            raise Overloaded("too many requests waiting for admission")
        lane = self._lanes[partition_index]
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        lane.waiting.append((candidate, future))
        self._pending += 1
        if not lane.busy:
            lane.busy = True
            task = asyncio.create_task(self._run_lane(lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _run_lane(self, lane: _Lane) -> None:
        # The round trips of a lane are sequential: a group is everything that
        # queued while the previous one was in flight.
        try:
            while lane.waiting:
                size = min(self._group_max, len(lane.waiting))
                batch = [lane.waiting.popleft() for _ in range(size)]
                await self._round_trip(lane.partition, batch)
        finally:
            lane.busy = False

    async def _round_trip(
        self, partition: Partition, batch: list[tuple[Candidate, asyncio.Future[Decision]]]
    ) -> None:
        started = time.perf_counter()
        result: GroupResult | None = None
        error: BaseException | None = None
        try:
            async with asyncio.timeout(self._timeout):
                result = await self._script.admit(
                    partition, self._share(), [candidate for candidate, _ in batch]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            error = QueueUnavailable(type(exc).__name__)
        except asyncio.CancelledError:
            error = QueueUnavailable("admission cancelled")
            raise
        finally:
            self._pending -= len(batch)
            for index, (_, future) in enumerate(batch):
                if future.done():  # the waiting handler went away
                    continue
                if result is not None:
                    future.set_result(result.decisions[index])
                else:
                    future.set_exception(error or QueueUnavailable("no reply"))
            self._observe(GroupStats(len(batch), time.perf_counter() - started, result))

    async def close(self) -> None:
        """Wait for the round trips in flight (the pending groups are flushed)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
