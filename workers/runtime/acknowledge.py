"""Acknowledging a batch: XACK, then trim what the stream's group is done with.

One script call (`queueing/lua/ack.lua`) per batch, the entry ids in one
space-joined argument; see the script for why it trims by MINID. Every
stream a worker consumes has exactly one consumer group, so what the group
has acknowledged can go.
"""

from __future__ import annotations

from collections.abc import Sequence

from queueing.keys import STORE_GROUP, Partition
from queueing.redis_client import RedisClient
from queueing.scripts import PipelinedScript, script_source


class Acknowledger:
    """Acknowledges and trims batches of a stream (by default: the intake stream's store group)."""

    def __init__(self, redis: RedisClient) -> None:
        self._script = PipelinedScript(redis, script_source("ack"))

    async def acknowledge(self, partition: Partition, entry_ids: Sequence[bytes]) -> int:
        """How many of the intake entries were pending (and are acknowledged now)."""
        return await self.acknowledge_in(partition.stream, STORE_GROUP, entry_ids)

    async def acknowledge_in(self, stream: str, group: str, entry_ids: Sequence[bytes]) -> int:
        """How many of the entries were pending in `group` (and are acknowledged now)."""
        if not entry_ids:
            return 0
        return int(await self._script.run([stream], [group, b" ".join(entry_ids)]))
