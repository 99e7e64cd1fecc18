"""Verification hand-off: an outbox row becomes jobs on the verification streams.

A job is `{"r": <16-byte registration id>}` on `gelombang:{pN}:verify:<kind>`,
the stream of the registration's own partition: the verification workers
load what they need from PostgreSQL, so no personal data travels here. One
outbox row (`verification_handoffs`) holds a stored batch's accepted ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from queueing.keys import JOB_FIELD as JOB_FIELD  # the door's priority jobs use it too
from queueing.keys import Partition
from queueing.redis_client import RedisClient
from queueing.scripts import PipelinedScript, ScriptCall, script_source

KINDS: Final = ("email", "nik")  # the order of the script's stream keys


@dataclass(frozen=True, slots=True)
class PendingHandoff:
    """One outbox row: the accepted registrations of a stored batch."""

    handoff_id: int
    partition: int
    # 16 bytes per id, concatenated: as PostgreSQL returns them and the
    # script takes them, so the drain never makes a UUID object for a job.
    registration_ids: bytes

    def uuids(self) -> list[uuid.UUID]:
        """The ids as UUIDs."""
        ids = self.registration_ids
        return [uuid.UUID(bytes=ids[start:start + 16]) for start in range(0, len(ids), 16)]


class Handoff:
    """Adds each outbox row's jobs to the verification streams exactly once."""

    def __init__(self, redis: RedisClient, marker_seconds: int) -> None:
        self._script = PipelinedScript(redis, script_source("handoff"))
        self._marker_seconds = marker_seconds

    async def hand_off(self, pending: Sequence[PendingHandoff]) -> int:
        """One round trip for every row; how many jobs were new."""
        if not pending:
            return 0
        replies = await self._script.run_all([self._call(row) for row in pending])
        for reply in replies:
            if isinstance(reply, BaseException):
                # A cluster node was down: its rows stay in the outbox, and the
                # sweeper relays them again; the others' markers make that
                # repeat add nothing.
                raise reply
        return sum(int(added) for added in replies)

    def _call(self, row: PendingHandoff) -> ScriptCall:
        partition = Partition(row.partition)
        keys = [*(partition.verification(kind) for kind in KINDS),
                partition.handoff(row.handoff_id)]
        return keys, [self._marker_seconds, row.registration_ids]
