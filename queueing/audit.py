"""The admin audit trail's entries on the Redis audit stream.

Every admin action (a change, and every authenticated read) is appended here,
by the door or by an admin command, before or with the action itself; the
drain workers archive the stream into PostgreSQL's `audit_log`
(`workers/drain/audit_archive.py`). An entry names who (the credential used), what
(an action and its arguments), when (Unix time) and from where (the client's
address, or the machine and user of a command).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline

from queueing.keys import AUDIT_STREAM, audit_read_mark
from queueing.redis_client import REDIS_UNAVAILABLE, RedisClient
from queueing.scripts import PipelinedScript, script_source

log = logging.getLogger("gelombang.audit")


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
    # No length cap: only the archive trims, once an entry is in PostgreSQL.
    _ = pipe.xadd(AUDIT_STREAM, dict(fields))  # type: ignore[arg-type]


async def append_audit(redis: RedisClient, *, actor: str, source: str, action: str,
                       details: Mapping[str, Any]) -> str:
    """Append one entry now; its stream id."""
    fields = audit_fields(actor=actor, source=source, action=action, details=details)
    entry_id: Any = await redis.xadd(AUDIT_STREAM, dict(fields))  # type: ignore[arg-type]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def append_read_audit(redis: RedisClient, *, actor: str, source: str, action: str,
                            details: Mapping[str, Any], window_seconds: float) -> str | None:
    """Append one read's entry unless the same read (actor, source, action, details)
    was audited within `window_seconds`; its stream id, or None when coalesced."""
    fields = audit_fields(actor=actor, source=source, action=action, details=details)
    # The address and the query go into the key only as a digest.
    digest = hashlib.sha256(b"\0".join(
        [actor.encode(), source.encode(), action.encode(),
         orjson.dumps(dict(details), option=orjson.OPT_SORT_KEYS)])).hexdigest()
    flat = [value for pair in fields.items() for value in pair]
    entry_id: Any = await PipelinedScript(redis, script_source("audit_read")).run(
        [AUDIT_STREAM, audit_read_mark(digest[:32])],
        [max(1, int(window_seconds * 1000)), *flat])
    if entry_id is None:
        return None
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


class AuditedRun:
    """What an audited command reports in its outcome entry (counts, never values)."""

    def __init__(self) -> None:
        self.describe: Callable[[], Mapping[str, Any]] = dict


@contextlib.asynccontextmanager
async def audited_run(redis: RedisClient, *, actor: str, source: str, action: str,
                      details: Mapping[str, Any]) -> AsyncIterator[AuditedRun]:
    """Audit a command's start (before the block: no audit entry, no run), then its
    outcome, whatever it is: `<action>.done` with `run.describe()`, or `<action>.failed`
    with the error's type (never its message, which could quote data) and what
    `run.describe()` says was done by then. An interruption (Ctrl-C) is a failure too."""
    await append_audit(redis, actor=actor, source=source, action=f"{action}.start",
                       details=details)
    run = AuditedRun()
    try:
        yield run
    except BaseException as exc:
        outcome = {"error": type(exc).__name__, **run.describe()}
        try:
            await append_audit(redis, actor=actor, source=source, action=f"{action}.failed",
                               details=outcome)
        except REDIS_UNAVAILABLE as unaudited:
            log.error("%s failed (%s); its outcome could not be audited (%s)", action,
                      type(exc).__name__, type(unaudited).__name__)
        raise
    await append_audit(redis, actor=actor, source=source, action=f"{action}.done",
                       details=run.describe())


def command_identity() -> tuple[str, str]:
    """Who and from where, for an admin command run on a machine: its user and host."""
    return f"cli:{getpass.getuser()}", socket.gethostname()
