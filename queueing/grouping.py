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
from typing import Final

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
from queueing.redis_client import REDIS_UNAVAILABLE, never_ran

_Waiting = deque[tuple[Candidate, "asyncio.Future[Decision]"]]
_Batch = list[tuple[Candidate, "asyncio.Future[Decision]"]]
# Between two tries to learn a lost reply's outcome when the last failed at once.
RECHECK_PAUSE_SECONDS: Final = 0.05


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
    `check_seconds`, and answers from that; if Redis still does not say, the
    candidates get OutcomeUnknown. Meanwhile nothing more is sent: waiting
    and arriving candidates are shed at once (nothing of theirs was stored).
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
        self._checking = False
        # Call ids unique across processes and restarts: a random prefix and a count.
        self._call_prefix = secrets.token_hex(6)
        self._calls = itertools.count()

    @property
    def pending(self) -> int:
        """Requests waiting for, or inside, a round trip."""
        return self._pending

    async def admit(self, partition_index: int, candidate: Candidate) -> Decision:
        """Wait for admission's decision on one candidate.

        Raises Overloaded when this process is at its bound, Shed while it is
        finding out a lost reply, QueueUnavailable when Redis certainly did
        not take the candidate, OutcomeUnknown when it may have.
        """
        if self._checking:
            raise Shed("finding out what became of a group")
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
        calls = [GroupCall(partition, _candidates(group), partition.admission_outcome(
            f"{self._call_prefix}{next(self._calls):x}")) for partition, group in groups]
        # One outcome per entry of batch: its decision, or why there is none.
        outcomes: list[Decision | QueueingError] | None = None
        try:
            results = await self._decide(calls)
            outcomes = []
            for result, call in zip(results, calls, strict=True):
                if isinstance(result, GroupResult):
                    outcomes.extend(result.decisions)
                else:
                    outcomes.extend(result for _ in call.candidates)
        finally:
            self._pending -= len(batch)
            for index, (_, future) in enumerate(batch):
                if future.done():  # the waiting handler went away
                    continue
                outcome = outcomes[index] if outcomes is not None else None
                if isinstance(outcome, Decision):
                    future.set_result(outcome)
                else:
                    # Cancelled or failed mid-call: it may have run, so
                    # unknown, never "not stored".
                    future.set_exception(OutcomeUnknown("no reply") if outcome is None
                                         else outcome)
            decided = None if outcomes is None else [
                outcome for outcome in outcomes if isinstance(outcome, Decision)]
            unknown = len(batch) if outcomes is None else sum(
                isinstance(outcome, OutcomeUnknown) for outcome in outcomes)
            self._observe(GroupStats(len(batch), time.perf_counter() - started, decided,
                                     unknown))

    async def _decide(self, calls: list[GroupCall]) -> list[GroupResult | QueueingError]:
        """Each call's result, or why there is none; a lost reply is found out first."""
        replies: list[GroupResult | BaseException]
        try:
            async with asyncio.timeout(self._timeout):
                replies = await self._script.admit_groups(self._share(), calls)
        except REDIS_UNAVAILABLE as exc:
            replies = [exc for _ in calls]
        results: list[GroupResult | QueueingError] = []
        lost = []
        for index, reply in enumerate(replies):
            if isinstance(reply, GroupResult):
                results.append(reply)
            elif never_ran(reply):
                results.append(QueueUnavailable(type(reply).__name__))
            else:
                results.append(OutcomeUnknown(type(reply).__name__))
                lost.append(index)
        if lost:
            found = await self._find_out([calls[index] for index in lost])
            for index, result in zip(lost, found, strict=True):
                results[index] = result
        return results

    async def _find_out(self, calls: list[GroupCall]) -> list[GroupResult | QueueingError]:
        """What Redis did with calls whose replies were lost, asked until check_seconds pass.

        Redis is not answering as it should: nothing more is sent meanwhile,
        and the requests waiting are shed (not sent, so truthfully refused),
        which bounds every answer by the timeout plus check_seconds.
        """
        self._checking = True
        self._shed_waiting()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._check_seconds
        found: list[GroupResult | QueueingError] = [
            OutcomeUnknown("Redis did not say within the check") for _ in calls]
        left = list(range(len(calls)))
        try:
            while left and (remaining := deadline - loop.time()) > 0:
                replies: list[GroupResult | BaseException | None]
                try:
                    async with asyncio.timeout(min(remaining, self._timeout)):
                        replies = await self._script.outcomes([calls[i] for i in left])
                except REDIS_UNAVAILABLE as exc:
                    replies = [exc for _ in left]
                still = []
                for index, reply in zip(left, replies, strict=True):
                    if reply is None:  # it had not run, and now never will
                        found[index] = QueueUnavailable("not run; fenced")
                    elif isinstance(reply, GroupResult):
                        found[index] = reply
                    else:
                        still.append(index)
                left = still
                if left:
                    # A refused connection fails at once (Redis restarting):
                    # ask again shortly rather than in a tight loop.
                    await asyncio.sleep(min(RECHECK_PAUSE_SECONDS,
                                            max(0.0, deadline - loop.time())))
        finally:
            self._checking = False
        return found

    def _shed_waiting(self) -> None:
        for waiting in self._waiting:
            while waiting:
                _, future = waiting.popleft()
                self._pending -= 1
                if not future.done():
                    future.set_exception(Shed("finding out what became of a group"))

    async def close(self) -> None:
        """Wait for the round trips in flight (the pending groups are flushed)."""
        while self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)


def _candidates(group: _Batch) -> Sequence[Candidate]:
    return [candidate for candidate, _ in group]
