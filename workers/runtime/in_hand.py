"""The entries a worker process has in hand: kept from being reclaimed, released at a stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from queueing.keys import Partition
from queueing.redis_client import RedisClient
from workers.runtime.connections import TRANSIENT
from workers.runtime.leases import PartitionLeases

log = logging.getLogger("gelombang.runtime")


class InHand:
    """Entry ids by stream, each with its partition (its consumer is `<name>-p<index>`)."""

    def __init__(self, redis: RedisClient, group: str, name: str,
                 leases: PartitionLeases) -> None:
        self._redis = redis
        self._group = group
        self._name = name
        self._leases = leases
        self._entries: dict[str, dict[bytes, Partition]] = {}

    def of(self, stream: str) -> dict[bytes, Partition]:
        """The stream's entries in hand (read only)."""
        return self._entries.get(stream, {})

    def add(self, stream: str, partition: Partition, entry_ids: Sequence[bytes]) -> None:
        """Entries just read or reclaimed."""
        entries = self._entries.setdefault(stream, {})
        for entry_id in entry_ids:
            entries[entry_id] = partition

    def drop(self, stream: str, entry_ids: Sequence[bytes]) -> None:
        """Entries acknowledged, or given up to be reclaimed."""
        entries = self._entries.get(stream, {})
        for entry_id in entry_ids:
            entries.pop(entry_id, None)

    async def keep(self, every: float) -> None:
        """Renew the idle time of entries in hand (JUSTID adds no delivery) and the
        leases of their partitions, so no other worker takes them meanwhile."""
        while True:
            await asyncio.sleep(every)
            for partition in await self._claim_all(idle_ms=None):
                try:
                    await self._leases.renew(partition)
                except TRANSIENT:
                    pass  # Redis is down: nobody can take the partition either

    async def release(self, idle_ms: int) -> None:
        """Mark what this worker leaves unfinished idle, so the next holder takes it now."""
        await self._claim_all(idle_ms)
        self._entries.clear()

    async def _claim_all(self, idle_ms: int | None) -> list[Partition]:
        """XCLAIM JUSTID every stream's entries in hand to themselves (resetting their
        idle time, or setting it to `idle_ms`); the partitions whose claim went through."""
        claimed = []
        for stream, entries in list(self._entries.items()):
            if not entries:
                continue
            partition = next(iter(entries.values()))
            try:
                await self._redis.xclaim(stream, self._group,
                                         f"{self._name}-p{partition.index}", min_idle_time=0,
                                         message_ids=list[Any](entries), idle=idle_ms,
                                         justid=True)
            except TRANSIENT as exc:
                # Redis is down too: nobody can reclaim them either; at a stop,
                # they are reclaimed after claim_idle_seconds.
                log.warning("entries in hand not claimed again (%s)", type(exc).__name__)
                continue
            claimed.append(partition)
        return claimed
