"""Verification hand-off: an outbox row becomes jobs on the verification streams.

A job is `{"r": <16-byte registration id>}` on `gelombang:{pN}:verify:<kind>`,
the stream of the registration's own partition: the verification workers
load what they need from PostgreSQL, so no personal data travels here. One
outbox row (`verification_handoffs`) holds a stored batch's accepted ids.

Redis holds a bounded window of the verification backlog: a stream that
already holds `drain.verification_window` jobs takes no more, and the jobs
wait in their outbox row in PostgreSQL, kind by kind (email flows on while
the ministry holds the NIK jobs back), until a refill finds room
(workers/drain/worker.py). With ten million registrations waiting, Redis holds
partitions x 2 x the window, not ten million jobs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from queueing.keys import JOB_FIELD as JOB_FIELD  # the door's priority jobs use it too
from queueing.keys import Partition
from queueing.redis_client import RedisClient
from queueing.scripts import PipelinedScript, ScriptCall, script_source

KINDS: Final = ("email", "nik")  # the order of the script's stream keys
NO_ROOM: Final = -1


@dataclass(frozen=True, slots=True)
class PendingHandoff:
    """One outbox row: the accepted registrations of a stored batch."""

    handoff_id: int
    partition: int
    # 16 bytes per id, concatenated: as PostgreSQL returns them and the
    # script takes them, so the drain never makes a UUID object for a job.
    registration_ids: bytes
    # Kinds already relayed (recorded in the row): not asked again.
    email_relayed: bool = False
    nik_relayed: bool = False

    def uuids(self) -> list[uuid.UUID]:
        """The ids as UUIDs."""
        ids = self.registration_ids
        return [uuid.UUID(bytes=ids[start:start + 16]) for start in range(0, len(ids), 16)]


@dataclass(slots=True)
class Relayed:
    """What a relay did: jobs added, and each row's kinds now relayed."""

    added: int = 0
    # handoff id -> (email relayed, NIK relayed), for every row asked about.
    kinds: dict[int, tuple[bool, bool]] = field(default_factory=dict)

    def complete(self) -> list[int]:
        """The rows whose jobs are all on the streams now."""
        return [row for row, (email, nik) in self.kinds.items() if email and nik]

    def waiting(self) -> dict[int, tuple[bool, bool]]:
        """The rows with a kind still waiting for room."""
        return {row: kinds for row, kinds in self.kinds.items() if not all(kinds)}


class Handoff:
    """Adds each outbox row's jobs to the verification streams exactly once per kind."""

    def __init__(self, redis: RedisClient, marker_seconds: int, window: int = 0) -> None:
        self._script = PipelinedScript(redis, script_source("handoff"))
        self._marker_seconds = marker_seconds
        self._window = window

    async def relay(self, pending: Sequence[PendingHandoff]) -> Relayed:
        """One round trip for every row: each kind relayed where its stream has room."""
        relayed = Relayed()
        if not pending:
            return relayed
        replies = await self._script.run_all([self._call(row) for row in pending])
        for row, reply in zip(pending, replies, strict=True):
            if isinstance(reply, BaseException):
                # A cluster node was down: its rows stay in the outbox, and the
                # refill relays them again; the others' markers make that
                # repeat add nothing.
                raise reply
            email, nik = (int(status) for status in reply)
            relayed.added += max(email, 0) + max(nik, 0)
            relayed.kinds[row.handoff_id] = (email != NO_ROOM, nik != NO_ROOM)
        return relayed

    async def hand_off(self, pending: Sequence[PendingHandoff]) -> int:
        """Relay the rows; how many jobs were new."""
        return (await self.relay(pending)).added

    def _call(self, row: PendingHandoff) -> ScriptCall:
        partition = Partition(row.partition)
        keys = [*(partition.verification(kind) for kind in KINDS),
                *(partition.handoff(row.handoff_id, kind) for kind in KINDS)]
        wanted = f"{int(not row.email_relayed)}{int(not row.nik_relayed)}"
        return keys, [self._marker_seconds, row.registration_ids, self._window, wanted]
