"""The drain's state for operators: per partition and per live worker."""

from __future__ import annotations

import time
from typing import Any

from redis.exceptions import ResponseError

from config.settings import Settings
from queueing.keys import HEARTBEATS, STORE_GROUP, Partition, heartbeat_details, partitions
from queueing.redis_client import RedisClient, connect


async def drain_status(settings: Settings) -> dict[str, Any]:
    """Backlog, lag, pending, consumers and dead letters per partition; live workers."""
    redis = connect(settings.redis, socket_timeout=settings.redis.timeout_seconds,
                    decode_responses=True)
    try:
        rows = [await _partition_status(redis, partition)
                for partition in partitions(settings.queue.partitions)]
        workers = await _live_workers(redis, settings.drain.heartbeat_seconds)
    finally:
        await redis.aclose()
    return {"partitions": rows, "workers": workers}


async def _partition_status(redis: RedisClient, partition: Partition) -> dict[str, Any]:
    stream = partition.stream
    row: dict[str, Any] = {
        "partition": partition.index, "stream": stream, "length": await redis.xlen(stream),
        "lag": None, "pending": 0, "consumers": 0,
        "dead_letters": await redis.xlen(partition.dead_letters),
        # The worker storing this partition now (workers/runtime/leases.py), if any.
        "lease": await redis.get(partition.drain_lease),
    }
    try:
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream yet
        return row
    for group in groups:
        if group["name"] == STORE_GROUP:
            row.update(lag=group.get("lag"), pending=group["pending"],
                       consumers=group["consumers"])
    return row


async def _live_workers(redis: RedisClient, heartbeat_seconds: float) -> list[dict[str, Any]]:
    now = time.time()
    beats: Any = await redis.zrange(HEARTBEATS, 0, -1, withscores=True)
    workers = []
    for name, beat in beats:
        details: Any = await redis.hgetall(heartbeat_details(name))
        workers.append({
            "name": name, "seconds_since_beat": round(now - beat, 1),
            "alive": now - beat < heartbeat_seconds * 3,
            "stored": int(details.get("stored", 0)),
            "batches": int(details.get("batches", 0)),
            "dead_letters": int(details.get("dead_letters", 0)),
        })
    return workers


def render_status(status: dict[str, Any]) -> str:
    """The status as aligned text tables."""
    lines = [f"{'partition':>9} {'backlog':>9} {'lag':>9} {'pending':>9} {'consumers':>9} "
             f"{'dead':>6}  stored by"]
    for row in status["partitions"]:
        lag = "-" if row["lag"] is None else str(row["lag"])
        lines.append(f"{row['partition']:>9} {row['length']:>9} {lag:>9} {row['pending']:>9} "
                     f"{row['consumers']:>9} {row['dead_letters']:>6}  {row['lease'] or '-'}")
    lines.append("")
    if not status["workers"]:
        lines.append("no drain worker has a heartbeat")
    for worker in status["workers"]:
        state = "alive" if worker["alive"] else "silent"
        lines.append(f"{worker['name']}: {state}, last beat {worker['seconds_since_beat']} s ago,"
                     f" {worker['stored']} stored in {worker['batches']} batches,"
                     f" {worker['dead_letters']} dead-lettered")
    return "\n".join(lines) + "\n"
