"""The admin audit trail's entries on the Redis audit stream.

Every admin action (a change, and every authenticated read) is appended here,
by the door or by an admin command, before or with the action itself; the
drain workers archive the stream into PostgreSQL's `audit_log`
(`workers/drain/audit_archive.py`). An entry names who (the credential used), what
(an action and its arguments), when (Unix time) and from where (the client's
address, or the machine and user of a command).
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Mapping
from typing import Any, Final

import orjson
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline

from queueing.keys import AUDIT_STREAM
from queueing.redis_client import RedisClient

# Entries kept in the stream (approximate trim). The archive copies them to
# PostgreSQL long before that many pile up; admin actions are rare.
AUDIT_MAX_ENTRIES: Final = 100_000


def audit_fields(*, actor: str, source: str, action: str,
                 details: Mapping[str, Any]) -> dict[str, bytes | str]:
    """The fields of one audit entry (`changes` holds the action's arguments)."""
    return {
        "at": str(time.time()),
        "actor": actor,
        "source": source,
        "action": action,
        "changes": orjson.dumps(dict(details)),
    }


def queue_audit(pipe: Pipeline | ClusterPipeline, fields: Mapping[str, bytes | str]) -> None:
    """Add the append to a pipeline, so the entry commits with what it records."""
    _ = pipe.xadd(AUDIT_STREAM, dict(fields), maxlen=AUDIT_MAX_ENTRIES,  # type: ignore[arg-type]
                  approximate=True)


async def append_audit(redis: RedisClient, *, actor: str, source: str, action: str,
                       details: Mapping[str, Any]) -> str:
    """Append one entry now; its stream id."""
    fields = audit_fields(actor=actor, source=source, action=action, details=details)
    entry_id: Any = await redis.xadd(AUDIT_STREAM, dict(fields),  # type: ignore[arg-type]
                                     maxlen=AUDIT_MAX_ENTRIES, approximate=True)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def command_identity() -> tuple[str, str]:
    """Who and from where, for an admin command run on a machine: its user and host."""
    return f"cli:{getpass.getuser()}", socket.gethostname()
