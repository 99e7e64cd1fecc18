"""The drain's Redis work alone: what any drain of these streams spends besides PostgreSQL.

Every entry is read through the `store` consumer group (`XREADGROUP COUNT
batch`, redis-py with hiredis, as the worker reads), its envelope unpacked
(the least a drain must do to write its columns), the accepted
registrations' two verification jobs handed off with the drain's own script
and marker, and the batch acknowledged and trimmed with the drain's own
script: the issue's XACK-after-commit, trimming and one job per
registration and kind, with nothing else (no validation, no PostgreSQL, no
retries). Its CPU per registration added to the raw COPY's bounds what the
drain can reach on the machine, whatever it does about PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import msgpack
from redis.asyncio import Redis

from queueing.envelope import STREAM_FIELD
from queueing.keys import STORE_GROUP, Partition, partitions
from workers.drain.handoff import Handoff, PendingHandoff
from workers.runtime.acknowledge import Acknowledger

CONSUMER = "floor"
MARKER_SECONDS = 3600


async def drain_streams(url: str, partition_count: int, batch_size: int,
                        accepted: frozenset[bytes]) -> int:
    """Read, hand off and acknowledge every entry, one loop per partition; entries read."""
    redis = Redis.from_url(url)
    handoff, acknowledger = Handoff(redis, MARKER_SECONDS), Acknowledger(redis)
    handoff_ids = itertools.count(1)

    async def drain(partition: Partition) -> int:
        read = 0
        while True:
            reply: Any = await redis.xreadgroup(STORE_GROUP, CONSUMER, {partition.stream: ">"},
                                                count=batch_size)
            entries = reply[0][1] if reply else []
            if not entries:
                return read
            read += len(entries)
            # Field 1 of an envelope is the registration id (queueing/envelope.py).
            ids = [msgpack.unpackb(fields[STREAM_FIELD])[1] for _, fields in entries]
            jobs = b"".join(rid for rid in ids if rid in accepted)
            if jobs:
                await handoff.hand_off([PendingHandoff(next(handoff_ids), partition.index,
                                                       jobs)])
            await acknowledger.acknowledge(partition, [entry_id for entry_id, _ in entries])

    try:
        for partition in partitions(partition_count):
            await redis.xgroup_create(partition.stream, STORE_GROUP, id="0", mkstream=True)
        return sum(await asyncio.gather(*(drain(p) for p in partitions(partition_count))))
    finally:
        await redis.aclose()
