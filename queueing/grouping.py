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
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from queueing.admission import (
    AdmissionScript,
    Candidate,
    Decision,
    GroupCall,
    GroupResult,
    PartitionShare,
)
from queueing.errors import OutcomeUnknown, QueueingError, QueueUnavailable
from queueing.keys import Partition
from queueing.lost_replies import find_out
from queueing.redis_client import REDIS_UNAVAILABLE, never_ran

_Waiting = deque[tuple[Candidate, "asyncio.Future[Decision]"]]
_Batch = list[tuple[Candidate, "asyncio.Future[Decision]"]]


class Overloaded(QueueingError):
    """This process already holds its bound of requests waiting for Redis."""


class Shed(QueueUnavailable):
    """Not sent: the process is finding out what became of a group Redis did not answer."""


@dataclass(slots=True)
class GroupStats:
    """Observations of one finished round trip, for metrics."""

    size: int  # candidates in the round trip, over every partition
    seconds: float  # sending to answering, a check of a lost reply included
    # None: Redis failed or timed out; fewer than size: some cluster nodes failed.
    decisions: list[Decision] | None
    # Candidates whose group's outcome stayed unknown (answered OutcomeUnknown).
    unknown: int = 0


class GroupAdmitter:
    """Admits candidates through the admission script, grouped per partition.

    A group sent to Redis is never answered as refused unless it certainly
    did not run: when the reply is lost (a timeout, a connection broken after
    sending) the admitter asks Redis what the call did, for up to
    `check_seconds`, beside the round trips that go on, and answers from
    that; if Redis still does not say, the candidates get OutcomeUnknown.
    Meanwhile nothing more is sent for that partition: its waiting and
    arriving candidates are shed at once (nothing of theirs was stored).
    """

    def __init__(
        self,
        script: AdmissionScript,
        partitions: tuple[Partition, ...],
        share: Callable[[], PartitionShare],
        *,
        group_max: int,
        pending_max: int,
        timeout: float,
        check_seconds: float,
        observe: Callable[[GroupStats], None] = lambda stats: None,
    ) -> None:
        self._script = script
        self._partitions = partitions
        self._waiting: list[_Waiting] = [deque() for _ in partitions]
        self._share = share
        self._group_max = group_max
        self._pending_max = pending_max
        self._timeout = timeout
        self._check_seconds = check_seconds
        self._observe = observe
        self._pending = 0
        self._flusher: asyncio.Task[None] | None = None
        # Partitions whose last call's reply is being found out, and those checks.
        self._checking: set[int] = set()
        self._checks: set[asyncio.Task[None]] = set()
        # Call ids unique across processes and restarts: a random prefix and a count.
        self._call_prefix = secrets.token_hex(6)
        self._calls = itertools.count()

    @property
    def pending(self) -> int:
        """Requests waiting for, or inside, a round trip (or its check)."""
        return self._pending

    async def admit(self, partition_index: int, candidate: Candidate) -> Decision:
        """Wait for admission's decision on one candidate.

        Raises Overloaded when this process is at its bound, Shed while it is
        finding out a lost reply of this partition, QueueUnavailable when
        Redis certainly did not take the candidate, OutcomeUnknown when it may
        have.
        """
        if partition_index in self._checking:
            raise Shed("finding out what became of this partition's last group")
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
            while any(self._waiting):
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
        calls = [GroupCall(partition, _candidates(group), partition.admission_outcome(
            f"{self._call_prefix}{next(self._calls):x}")) for partition, group in groups]
        batches = [group for _, group in groups]
        results: list[GroupResult | QueueingError] | None = None
        try:
            results = await self._send(calls)
        finally:
            if results is None:  # cancelled or failed mid-call: it may have run
                results = [OutcomeUnknown("no reply") for _ in calls]
            lost = [index for index, result in enumerate(results)
                    if isinstance(result, OutcomeUnknown)]
            for index, (batch, result) in enumerate(zip(batches, results, strict=True)):
                if index not in lost:  # the others are answered now, not after the check
                    self._answer(batch, result)
            if not lost:
                self._record(batches, results, started)
            else:
                for index in lost:
                    self._start_checking(calls[index].partition.index)
                check = asyncio.create_task(self._check(calls, batches, results, lost, started))
                self._checks.add(check)
                check.add_done_callback(self._checks.discard)

    async def _send(self, calls: list[GroupCall]) -> list[GroupResult | QueueingError]:
        """Each call's result, or why there is none (OutcomeUnknown: the reply was lost)."""
        replies: list[GroupResult | BaseException]
        try:
            async with asyncio.timeout(self._timeout):
                replies = await self._script.admit_groups(self._share(), calls)
        except REDIS_UNAVAILABLE as exc:
            replies = [exc for _ in calls]
        return [reply if isinstance(reply, GroupResult)
                else QueueUnavailable(type(reply).__name__) if never_ran(reply)
                else OutcomeUnknown(type(reply).__name__) for reply in replies]

    def _start_checking(self, partition_index: int) -> None:
        # Redis is not answering this partition as it should: send nothing
        # more for it until its lost reply is found out. Those waiting were
        # not sent, so refusing them is true.
        self._checking.add(partition_index)
        waiting = self._waiting[partition_index]
        while waiting:
            _, future = waiting.popleft()
            self._pending -= 1
            if not future.done():
                future.set_exception(Shed("finding out what became of this partition's group"))

    async def _check(self, calls: list[GroupCall], batches: list[_Batch],
                     results: list[GroupResult | QueueingError], lost: list[int],
                     started: float) -> None:
        try:
            found = await find_out(self._script, [calls[i] for i in lost],
                                   per_try=self._timeout, within=self._check_seconds)
            for index, result in zip(lost, found, strict=True):
                results[index] = result
        finally:
            # Cancelled (a shutdown past its deadline): the lost ones stay unknown.
            for index in lost:
                self._checking.discard(calls[index].partition.index)
                self._answer(batches[index], results[index])
            self._record(batches, results, started)

    def _answer(self, batch: _Batch, result: GroupResult | QueueingError) -> None:
        """Answer every candidate of one call."""
        self._pending -= len(batch)
        for index, (_, future) in enumerate(batch):
            if future.done():  # the waiting handler went away
                continue
            if isinstance(result, GroupResult):
                future.set_result(result.decisions[index])
            else:
                future.set_exception(result)

    def _record(self, batches: list[_Batch], results: list[GroupResult | QueueingError],
                started: float) -> None:
        """One round trip's observations, once all of it is answered."""
        decided = [decision for result in results if isinstance(result, GroupResult)
                   for decision in result.decisions]
        unknown = sum(len(batch) for batch, result in zip(batches, results, strict=True)
                      if isinstance(result, OutcomeUnknown))
        size = sum(len(batch) for batch in batches)
        self._observe(GroupStats(size, time.perf_counter() - started, decided, unknown))

    async def close(self) -> None:
        """Wait for the round trips in flight and their checks (pending groups are flushed)."""
        while self._flusher is not None or self._checks:
            running = [*self._checks, *([self._flusher] if self._flusher else [])]
            await asyncio.gather(*running, return_exceptions=True)


def _candidates(group: _Batch) -> Sequence[Candidate]:
    return [candidate for candidate, _ in group]
