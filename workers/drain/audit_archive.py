"""Archiving the admin audit log: the Redis audit stream into the `audit_log` table.

The door records every admin change in the audit stream in the same Redis
transaction as the change itself (it has no PostgreSQL on that path); the
drain workers copy the entries into PostgreSQL, where they are kept for good.
The stream's entry id is unique in the table, so an entry archived twice (a
crash before XACK) is stored once.

The stream is trimmed here and nowhere else: after the commit, with the
acknowledgement, up to the archive group's oldest pending entry
(`queueing/lua/ack.lua`). The door appends without a length cap, so an entry
leaves Redis only once it is in PostgreSQL; while the archive is down the
stream grows (a few hundred bytes an entry; reads are coalesced, so an open
ops page adds one a few minutes, not one a refresh).
"""

from __future__ import annotations

import datetime
from typing import Any, Final

import asyncpg
from redis.exceptions import ResponseError

from queueing.keys import AUDIT_STREAM
from queueing.redis_client import RedisClient
from workers.runtime.acknowledge import Acknowledger

ARCHIVE_GROUP: Final = "archive"
_INSERT: Final = """
INSERT INTO audit_log (stream_id, at, actor, source, action, changes)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
                     $6::jsonb[])
    ON CONFLICT (stream_id) DO NOTHING
"""


async def ensure_group(redis: RedisClient) -> None:
    """The archive's consumer group, from the stream's first entry."""
    try:
        await redis.xgroup_create(AUDIT_STREAM, ARCHIVE_GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def archive_once(redis: RedisClient, pool: asyncpg.Pool, consumer: str, *, count: int,
                       block_ms: int, claim_idle_ms: int) -> int:
    """Archive what is new (or left pending by a dead worker); how many entries."""
    claimed: Any = await redis.xautoclaim(AUDIT_STREAM, ARCHIVE_GROUP, consumer,
                                          min_idle_time=claim_idle_ms, count=count)
    entries = list(claimed[1])
    if not entries:
        reply: Any = await redis.xreadgroup(ARCHIVE_GROUP, consumer, {AUDIT_STREAM: ">"},
                                            count=count, block=block_ms)
        entries = list(reply[0][1]) if reply else []
    if not entries:
        return 0
    rows = [_row(entry_id, fields) for entry_id, fields in entries]
    await pool.execute(_INSERT, *(list(column) for column in zip(*rows, strict=True)))
    # Acknowledged and trimmed in one script call: what precedes the group's
    # oldest pending entry is archived (another worker's batch, still being
    # committed, stays pending and keeps itself and what follows).
    await Acknowledger(redis).acknowledge_in(AUDIT_STREAM, ARCHIVE_GROUP,
                                             [entry_id for entry_id, _ in entries])
    return len(entries)


def _row(entry_id: bytes, fields: dict[bytes, bytes]) -> tuple[Any, ...]:
    def text(name: bytes) -> str:
        return fields.get(name, b"").decode(errors="replace")

    try:
        at = datetime.datetime.fromtimestamp(float(text(b"at")), datetime.UTC)
    except ValueError:
        at = datetime.datetime.now(datetime.UTC)
    return (entry_id.decode(), at, text(b"actor"), text(b"source"), text(b"action"),
            text(b"changes") or "{}")
