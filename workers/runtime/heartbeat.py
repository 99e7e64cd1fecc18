"""Worker heartbeats (who is alive, per role) and the role's backlog as metrics see it."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from queueing.keys import heartbeat_details, role_heartbeats
from queueing.redis_client import RedisClient
from workers.metrics import WorkerMetrics
from workers.runtime.connections import TRANSIENT


class Heartbeat:
    """One worker process's beat: its name in the role's sorted set, details beside it."""

    def __init__(self, redis: RedisClient, role: str, name: str, every: float,
                 fields: Callable[[], Mapping[str, str | int | float]]) -> None:
        self._redis = redis
        self._role = role
        self._name = name
        self._every = every
        self._fields = fields
        self._beats = role_heartbeats(role)
        self._details = heartbeat_details(name)
        self._started_at = time.time()

    async def beat(self) -> int:
        """Beat once; how many workers of the role are alive (beat within 3 periods)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            _ = pipe.zadd(self._beats, {self._name: time.time()})
            # `every` tells a reader when this beat is stale (queueing/process_reports.py).
            fields: dict[Any, Any] = {
                "role": self._role, "pid": os.getpid(), "host": socket.gethostname(),
                "started_at": self._started_at, "every": self._every, **self._fields()}
            _ = pipe.hset(self._details, mapping=fields)
            _ = pipe.expire(self._details, int(self._every * 3) + 1)
            _ = pipe.zcount(self._beats, time.time() - self._every * 3, "+inf")
            *_, live = await pipe.execute()
        return int(live)

    async def forget(self) -> None:
        """Leave the set at a stop (else the beat ages out after three periods)."""
        try:
            await self._redis.zrem(self._beats, self._name)
            await self._redis.delete(self._details)
        except TRANSIENT:
            pass


async def measure_backlog(redis: RedisClient, streams: Sequence[str],
                          metrics: WorkerMetrics) -> None:
    """Entries waiting in the role's streams, and the oldest one's age.

    Finished entries are trimmed (workers/runtime/acknowledge.py), so a
    stream's first entry is its oldest unfinished one; its id is its time.
    """
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            _ = pipe.xlen(stream)
            _ = pipe.xrange(stream, count=1)
        replies = await pipe.execute()
    lengths, firsts = replies[0::2], replies[1::2]
    metrics.backlog(sum(int(length) for length in lengths))
    oldest_ms = min((int(first[0][0].split(b"-")[0]) for first in firsts if first), default=None)
    metrics.oldest_pending(0.0 if oldest_ms is None else time.time() - oldest_ms / 1000)
