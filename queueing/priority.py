"""The verification priority lane: jobs of registrants who are waiting, served first.

A job is the backlog's (`{"r": <16-byte registration id>}`) on
`Partition.verification_priority(kind)` of the partition
`partition_for_registration` names. Each registration and kind has a hold
(`Partition.priority_hold`, in the same partition, so a hold and its lane
share a cluster slot): a job is added only by whoever sets the hold, so a
status page polled every few seconds costs one job per hold. A poll's hold
holds `poll`, a resend's `resend`: a resend that finds a resend's hold is
refused until it expires; a poll's hold it takes over (that poll's job, if
the email is still pending, is the one in the lane). Holds expire by
themselves; nobody deletes one but a resend that could not go through
(`release`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from config.settings import Settings
from queueing.keys import JOB_FIELD, Partition, partition_for_registration
from queueing.redis_client import RedisClient
from queueing.scripts import PipelinedScript, script_source

EMAIL: Final = "email"
NIK: Final = "nik"


class PriorityLane:
    """Holds and jobs of the priority lanes, for one process's Redis client."""

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self._redis = redis
        self._partitions = settings.queue.partitions
        self._max_length = settings.queue.priority_max_length
        self.hold_seconds: Mapping[str, int] = {
            EMAIL: settings.email.resend_interval_seconds,
            NIK: settings.nik.priority_hold_seconds,
        }
        self._push = PipelinedScript(redis, script_source("priority"))
        self._resend = PipelinedScript(redis, script_source("resend"))

    def partition(self, registration_id: bytes) -> Partition:
        """The partition whose lanes take this registration's jobs."""
        return Partition(partition_for_registration(registration_id, self._partitions))

    async def push(self, registration_id: bytes, kinds: Sequence[str]) -> dict[str, int]:
        """Add a job for each kind whose hold is free, in one call.

        Per kind: 0 when its job was added (and its hold set), else the hold's
        remaining milliseconds.
        """
        partition = self.partition(registration_id)
        keys = [key for kind in kinds for key in (partition.priority_hold(kind, registration_id),
                                                  partition.verification_priority(kind))]
        args: list[str | bytes | int] = [registration_id, self._max_length]
        args += [self.hold_seconds[kind] for kind in kinds]
        replies = await self._push.run(keys, args)
        return {kind: int(reply) for kind, reply in zip(kinds, replies, strict=True)}

    async def hold_for_resend(self, registration_id: bytes, *, add_job: bool) -> int:
        """Take the email hold for a resend: 0 when taken, else the holding resend's
        remaining milliseconds.

        add_job: the email is still pending, so add its job now unless a poll's
        hold says one is in the lane; else the caller adds it (`add`) once
        PostgreSQL has the email pending again.
        """
        partition = self.partition(registration_id)
        keys = [partition.priority_hold(EMAIL, registration_id),
                partition.verification_priority(EMAIL)]
        args: list[str | bytes | int] = [registration_id, self._max_length,
                                         self.hold_seconds[EMAIL], int(add_job)]
        return int(await self._resend.run(keys, args))

    async def add(self, kind: str, registration_id: bytes) -> None:
        """Add a job for a hold this process took (`hold_for_resend`)."""
        lane = self.partition(registration_id).verification_priority(kind)
        await self._redis.xadd(lane, {JOB_FIELD: registration_id}, maxlen=self._max_length,
                               approximate=True)

    async def release(self, kind: str, registration_id: bytes) -> None:
        """Give up a hold taken for a resend that did not go through."""
        await self._redis.delete(self.partition(registration_id).priority_hold(kind,
                                                                               registration_id))
