"""Group commit for admission: one Redis round trip per group of requests.

Requests wait in one queue per partition. The first request into an idle
admitter starts a round trip on the next loop iteration, so every request
that arrived in the same iteration joins it; requests arriving while a round
trip is in flight wait for the next one. A round trip carries one script
call per partition with requests waiting, pipelined. Under light load a
group is one request and adds no delay; under heavy load groups grow and
the Redis cost per request falls.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from queueing.admission import AdmissionScript, Candidate, Decision, PartitionShare
from queueing.errors import QueueingError, QueueUnavailable
from queueing.keys import Partition
from queueing.redis_client import REDIS_UNAVAILABLE

_Waiting = deque[tuple[Candidate, "asyncio.Future[Decision]"]]
_Batch = list[tuple[Candidate, "asyncio.Future[Decision]"]]


class Overloaded(QueueingError):
    """This process already holds its bound of requests waiting for Redis."""


@dataclass(slots=True)
class GroupStats:
    """Observations of one finished round trip, for metrics."""

    size: int  # candidates in the round trip, over every partition
    seconds: float
    # None: Redis failed or timed out; fewer than size: some cluster nodes failed.
    decisions: list[Decision] | None


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
        self._partitions = partitions
        self._waiting: list[_Waiting] = [deque() for _ in partitions]
        self._share = share
        self._group_max = group_max
        self._pending_max = pending_max
        self._timeout = timeout
        self._observe = observe
        self._pending = 0
        self._flusher: asyncio.Task[None] | None = None

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
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiting[partition_index].append((candidate, future))
        self._pending += 1
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())
        return await future

    async def _flush_all(self) -> None:
        # Round trips are sequential: each carries what queued while the
        # previous one was in flight, at most group_max per partition.
        try:
            while self._pending:
                await self._round_trip(self._take_groups())
        finally:
            self._flusher = None

    def _take_groups(self) -> list[tuple[Partition, _Batch]]:
        groups = []
        for partition, waiting in zip(self._partitions, self._waiting, strict=True):
            if waiting:
                size = min(self._group_max, len(waiting))
                groups.append((partition, [waiting.popleft() for _ in range(size)]))
        return groups

    async def _round_trip(self, groups: list[tuple[Partition, _Batch]]) -> None:
        started = time.perf_counter()
        batch = [entry for _, group in groups for entry in group]
        # One outcome per entry of batch: its decision, or why there is none.
        outcomes: list[Decision | QueueUnavailable] | None = None
        error: QueueUnavailable | None = None
        try:
            async with asyncio.timeout(self._timeout):
                results = await self._script.admit_groups(
                    self._share(), [(partition, _candidates(group)) for partition, group in groups]
                )
            outcomes = []
            for result, (_, group) in zip(results, groups, strict=True):
                if isinstance(result, QueueUnavailable):
                    # Only this partition's node failed (a cluster in failover).
                    outcomes.extend(result for _ in group)
                else:
                    outcomes.extend(result.decisions)
        except REDIS_UNAVAILABLE as exc:
            error = QueueUnavailable(type(exc).__name__)
        except asyncio.CancelledError:
            error = QueueUnavailable("admission cancelled")
            raise
        finally:
            self._pending -= len(batch)
            for index, (_, future) in enumerate(batch):
                if future.done():  # the waiting handler went away
                    continue
                outcome = outcomes[index] if outcomes is not None else None
                if isinstance(outcome, Decision):
                    future.set_result(outcome)
                else:
                    future.set_exception(outcome or error or QueueUnavailable("no reply"))
            decided = None if outcomes is None else [
                outcome for outcome in outcomes if isinstance(outcome, Decision)]
            self._observe(GroupStats(len(batch), time.perf_counter() - started, decided))

    async def close(self) -> None:
        """Wait for the round trips in flight (the pending groups are flushed)."""
        while self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)


def _candidates(group: _Batch) -> Sequence[Candidate]:
    return [candidate for candidate, _ in group]
