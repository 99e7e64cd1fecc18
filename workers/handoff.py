"""Verification hand-off: outbox rows become jobs on the verification streams.

A job is `{"r": <16-byte registration id>}` on `gelombang:{pN}:verify:<kind>`,
the stream of the registration's own partition: the verification workers
load what they need from PostgreSQL, so no personal data travels here.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from queueing.keys import Partition
from queueing.redis_client import RedisClient
from queueing.scripts import PipelinedScript, ScriptCall, script_source

KINDS: Final = ("email", "nik")  # the order of the script's stream keys
JOB_FIELD: Final = b"r"


@dataclass(frozen=True, slots=True)
class Job:
    """One verification job waiting in the outbox."""

    registration_id: uuid.UUID
    kind: str  # one of KINDS
    partition: int

    @property
    def job_id(self) -> str:
        """Unique per registration and kind: the hand-off marker's name."""
        return f"{self.registration_id.hex}:{self.kind}"


class Handoff:
    """Adds outbox jobs to the verification streams, each exactly once."""

    def __init__(self, redis: RedisClient, marker_seconds: int) -> None:
        self._script = PipelinedScript(redis, script_source("handoff"))
        self._marker_seconds = marker_seconds

    async def hand_off(self, jobs: Sequence[Job]) -> int:
        """One round trip for every partition's jobs; how many were new."""
        if not jobs:
            return 0
        by_partition: dict[int, list[Job]] = defaultdict(list)
        for job in jobs:
            by_partition[job.partition].append(job)
        calls = [self._call(Partition(index), group) for index, group in by_partition.items()]
        replies = await self._script.run_all(calls)
        for reply in replies:
            if isinstance(reply, BaseException):
                # A cluster node was down: its jobs stay in the outbox, and the
                # caller (or the sweeper) hands them off again; the others'
                # markers make that repeat add nothing.
                raise reply
        return sum(int(added) for added in replies)

    def _call(self, partition: Partition, jobs: list[Job]) -> ScriptCall:
        keys = [partition.verification(kind) for kind in KINDS]
        args: list[str | bytes | int] = [self._marker_seconds]
        for job in jobs:
            keys.append(partition.handoff(job.job_id))
            args += [KINDS.index(job.kind) + 1, job.registration_id.bytes]
        return keys, args
