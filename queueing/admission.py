"""Admission control: the deployment-wide token bucket, decided in Redis.

The global `rate_per_second` and `burst` are split evenly over the partitions;
each partition's bucket lives beside its stream (same hash tag), so a single
script call per group of requests takes tokens, records idempotency keys and
appends the admitted entries atomically; the calls for every partition
that has requests waiting travel together in one pipelined round trip.
A registration's partition comes from a keyed hash (uniform), so under a
sustained overload every partition is saturated and the sum admitted is
exactly burst + rate * t. See docs/admission.md for the bounds.

Each call also records what it decided, briefly, under a key of its own, so
a door that lost the reply can find out instead of guessing
(queueing/lua/outcome.lua; docs/admission.md, "When Redis fails").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from config.settings import AdmissionPolicy as AdmissionPolicy
from queueing.keys import (
    ADMISSION_FENCE_SECONDS,
    ADMISSION_OUTCOME_SECONDS,
    Partition,
    idempotency_bucket,
    idempotency_digest,
)
from queueing.redis_client import RedisClient
from queueing.scripts import PipelinedScript, ScriptCall, script_source

ADMIT_SCRIPT = script_source("admit")
OUTCOME_SCRIPT = script_source("outcome")


class Outcome(IntEnum):
    """What admission decided for one registration."""

    LIMITED = 0
    ADMITTED = 1
    REPLAYED = 2
    BACKLOG_FULL = -1
    CLOSED = -2
    # Not tried against the bucket, or refused by it: it joined the waiting room's
    # line (Decision.place). Never a reply of the admission script.
    QUEUED = 3


@dataclass(frozen=True, slots=True)
class PartitionShare:
    """One partition's share of the policy, pre-rendered as script arguments."""

    rate_per_second: float
    capacity: float
    high_water: int
    idempotency_ttl: int
    args: tuple[str, ...]

    @classmethod
    def of(cls, policy: AdmissionPolicy, partitions: int, idempotency_ttl: int) -> PartitionShare:
        """Split the global policy evenly over `partitions`."""
        rate = policy.rate_per_second / partitions
        # A bucket below one token could never admit: each partition holds at
        # least one, so the burst in force is max(burst, partitions).
        capacity = max(1.0, policy.burst / partitions)
        high_water = max(1, math.ceil(policy.backlog_high_water / partitions))
        args = (
            repr(rate),
            repr(capacity),
            str(high_water),
            "1" if policy.enabled else "0",
            "1" if policy.open else "0",
        )
        return cls(rate, capacity, high_water, idempotency_ttl, args)


# Candidate, Decision, GroupResult and GroupCall are made per request: not
# frozen, for the reason given in envelope.py. Treat them as values.
@dataclass(slots=True)
class Candidate:
    """A validated, sealed registration asking to be admitted."""

    registration_id: bytes
    envelope: bytes
    idempotency_key: str | None
    # How the bucket treats it (admit.lua): REGULAR; TICKETED, holding its turn in
    # the waiting room: admitted without a token (the backlog limit still
    # applies), under its ticket's idempotency key; REPLAY_ONLY: its key's
    # earlier admission, if any, else LIMITED with no token taken (it joins
    # the line instead).
    mode: bytes = b""


REGULAR: bytes = b""
TICKETED: bytes = b"1"
REPLAY_ONLY: bytes = b"r"


@dataclass(slots=True)
class Decision:
    """Admission's answer for one candidate."""

    outcome: Outcome
    # The id the client is told: the candidate's own, or the replayed one.
    registration_id: bytes | None = None
    # For LIMITED: how long until a token would be there for this request.
    retry_after_ms: int = 0
    # Its place in the waiting room's line (queueing/line.py, Place), for QUEUED
    # and for a BACKLOG_FULL that joined the line.
    place: Any = None


@dataclass(slots=True)
class GroupResult:
    """The decisions for one group, in order, and the whole tokens left."""

    decisions: list[Decision]
    tokens_left: int


@dataclass(slots=True)
class GroupCall:
    """One partition's group in one round trip, and where the call records its outcome."""

    partition: Partition
    candidates: Sequence[Candidate]
    # Unique per call (keys.py, Partition.admission_outcome).
    outcome_key: str


class AdmissionScript:
    """The admission script, and the question after a lost reply, bound to one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        # Direct: an admission call is never retried by the client (a retry of a
        # call whose reply was lost could run it twice; lost replies are found out
        # instead, queueing/lost_replies.py), and it is the door's hottest call.
        self._admit = PipelinedScript(redis, ADMIT_SCRIPT, direct=True)
        self._outcome = PipelinedScript(redis, OUTCOME_SCRIPT, direct=True)

    async def admit_groups(
        self, share: PartitionShare, calls: Sequence[GroupCall]
    ) -> list[GroupResult | BaseException]:
        """Decide several partitions' groups in one round trip: one script call each.

        On a cluster a call whose node failed has the exception in its place
        and the others are decided; on one server any failure raises for all.
        """
        replies = await self._admit.run_all([_script_call(call, share) for call in calls])
        return [reply if isinstance(reply, BaseException) else _group_result(reply, call)
                for reply, call in zip(replies, calls, strict=True)]

    async def outcomes(
        self, calls: Sequence[GroupCall]
    ) -> list[GroupResult | BaseException | None]:
        """What became of calls whose replies were lost, in one round trip.

        Each call's decisions, or None: it had not run, and now never will
        (queueing/lua/outcome.lua fences it). Failures as admit_groups.
        """
        replies = await self._outcome.run_all(
            [((call.outcome_key,), (ADMISSION_FENCE_SECONDS,)) for call in calls])
        return [reply if reply is None or isinstance(reply, BaseException)
                else _group_result(reply, call)
                for reply, call in zip(replies, calls, strict=True)]


def _group_result(replies: list[Any], call: GroupCall) -> GroupResult:
    return GroupResult(
        [_decision(reply, candidate)
         for reply, candidate in zip(replies, call.candidates, strict=False)],
        int(replies[-1]),
    )


def _script_call(call: GroupCall, share: PartitionShare) -> ScriptCall:
    partition, group = call.partition, call.candidates
    keys = (partition.stream, partition.bucket, call.outcome_key)
    # No clock of the door's here: the script names the idempotency period
    # from the Redis server's (keys.py, Partition.idempotency).
    args: list[str | bytes | int] = [
        *share.args, share.idempotency_ttl, partition.idempotency_stem,
        ADMISSION_OUTCOME_SECONDS, len(group)]
    for candidate in group:
        if candidate.idempotency_key is None:
            args += (b"", b"")
        else:
            digest = idempotency_digest(candidate.idempotency_key)
            args += (idempotency_bucket(digest), digest)
        args += (candidate.registration_id, candidate.envelope, candidate.mode)
    return keys, args


def _decision(reply: list[Any], candidate: Candidate) -> Decision:
    outcome = Outcome(int(reply[0]))
    if outcome is Outcome.ADMITTED:
        return Decision(outcome, candidate.registration_id)
    if outcome is Outcome.REPLAYED:
        return Decision(outcome, bytes(reply[1]))
    if outcome is Outcome.LIMITED:
        return Decision(outcome, retry_after_ms=int(reply[1]))
    return Decision(outcome)
