"""Which store failures are PostgreSQL refusing an entry, and how often each entry was.

Only a refusal of the entry itself counts towards its dead letter: an outage
(connection lost, a timeout, PostgreSQL starting or shutting down), a lease
taken over, a worker restarted or a schema PostgreSQL cannot use (a
read-only standby, a missing table) never does, however long it lasts; the
batch is retried instead. A refusal is an error of SQLSTATE class 22 (data
exception: a value out of range, a bad encoding), 23 (integrity constraint)
or 54 (program limit: a value too large for an index), or an exception no
one foresaw that the store statement raised (a bug an entry triggers must
not hold its partition forever either).

The counts live in Redis, a hash per partition (`Partition.drain_refusals`),
so a worker restarted between two refusals of an entry goes on counting. The
hash expires `REFUSALS_KEPT_SECONDS` after its last refusal: a count left by
a worker that died before forgetting it goes by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import asyncpg

from queueing.keys import Partition
from queueing.redis_client import RedisClient
from workers.runtime.connections import TRANSIENT
from workers.runtime.leases import LeaseLost

# SQLSTATE classes that say "this row is wrong", not "not now".
REFUSAL_CLASSES: Final = frozenset({"22", "23", "54"})
# Far longer than any entry waits between two of its refusals (seconds apart).
REFUSALS_KEPT_SECONDS: Final = 7 * 86_400


class Refused(Exception):
    """PostgreSQL refused what it was given (the caller bisects, then counts)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why  # a SQLSTATE or an exception type: never a value


def refusal(exc: BaseException) -> Refused | None:
    """The refusal `exc` (raised by the store statement) is, or None for "try again"."""
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return Refused(f"SQLSTATE {state}") if state[:2] in REFUSAL_CLASSES else None
    if isinstance(exc, (*TRANSIENT, LeaseLost)) or not isinstance(exc, Exception):
        return None
    return Refused(type(exc).__name__)


class RefusalCounts:
    """Per-entry refusal counts of the intake partitions, in Redis."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def add(self, partition: Partition, entry_id: bytes) -> int:
        """Count one more refusal of the entry; how many there have been."""
        key = partition.drain_refusals
        async with self._redis.pipeline(transaction=False) as pipe:
            _ = pipe.hincrby(key, entry_id, 1)
            _ = pipe.expire(key, REFUSALS_KEPT_SECONDS)
            replies: list[Any] = await pipe.execute()
        return int(replies[0])

    async def forget(self, partition: Partition, entry_ids: Sequence[bytes]) -> None:
        """Entries stored or dead-lettered: their counts go."""
        if entry_ids:
            await self._redis.hdel(partition.drain_refusals, *entry_ids)
