"""GET /admin/v1/audit: the admin audit trail, newest first, a page at a time.

Entries are written to the Redis audit stream and archived into PostgreSQL's
`audit_log` by the drain workers, so an entry can be in either place or both.
A page is the newest `limit` entries of the union, strictly before the cursor
(an entry id, `<ms>-<seq>`, the order the entries were written in): the top
`limit` of a union lies within the top `limit` of each side, so one bounded
read of each suffices. Entries found in PostgreSQL are marked archived.
"""

from __future__ import annotations

import asyncio
import datetime
import re
from typing import Any, Final

import orjson
from aiohttp import web

from intake.responses import error_response, json_response
from intake.state import DOOR
from intake.storage import StorageUnavailable
from queueing.keys import AUDIT_STREAM
from queueing.redis_client import REDIS_UNAVAILABLE

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
_ENTRY_ID: Final = re.compile(r"(\d{1,20})-(\d{1,20})")

EntryKey = tuple[int, int]


def parse_page(query: dict[str, str]) -> tuple[int, EntryKey | None] | dict[str, str]:
    """(limit, cursor) from the query string, or field codes for a 422."""
    problems: dict[str, str] = {}
    limit = DEFAULT_LIMIT
    raw_limit = query.get("limit")
    if raw_limit is not None:
        if not raw_limit.isascii() or not raw_limit.isdigit():
            problems["limit"] = "wrong_type"
        elif not 1 <= int(raw_limit) <= MAX_LIMIT:
            problems["limit"] = "out_of_range"
        else:
            limit = int(raw_limit)
    cursor: EntryKey | None = None
    raw_cursor = query.get("cursor")
    if raw_cursor is not None:
        match = _ENTRY_ID.fullmatch(raw_cursor)
        if match is None:
            problems["cursor"] = "wrong_format"
        else:
            cursor = (int(match[1]), int(match[2]))
    unknown = set(query) - {"limit", "cursor"}
    problems.update({name: "unknown_field" for name in unknown})
    return problems or (limit, cursor)


def _key(entry_id: str) -> EntryKey:
    first, _, second = entry_id.partition("-")
    return int(first), int(second)


def _from_stream(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    def text(name: bytes) -> str:
        return fields.get(name, b"").decode(errors="replace")

    try:
        at = datetime.datetime.fromtimestamp(float(text(b"at")), datetime.UTC).isoformat()
    except ValueError:
        at = None
    try:
        changes = orjson.loads(fields.get(b"changes", b"{}"))
    except orjson.JSONDecodeError:
        changes = {}
    return {"id": entry_id.decode(), "at": at, "actor": text(b"actor"),
            "source": text(b"source"), "action": text(b"action"), "changes": changes,
            "archived": False}


def _from_table(row: Any) -> dict[str, Any]:
    return {"id": row["stream_id"], "at": row["at"].isoformat(), "actor": row["actor"],
            "source": row["source"], "action": row["action"],
            "changes": orjson.loads(row["changes"]), "archived": True}


async def get_audit(request: web.Request) -> web.Response:
    """A page of the audit trail, newest first."""
    page = parse_page(dict(request.query))
    if isinstance(page, dict):
        return error_response(422, "validation_failed", fields=page)
    limit, cursor = page
    door = request.app[DOOR]
    newest = f"({cursor[0]}-{cursor[1]}" if cursor is not None else "+"
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            streamed: Any = await door.redis.xrevrange(AUDIT_STREAM, max=newest, min="-",
                                                       count=limit)
    except REDIS_UNAVAILABLE:
        return error_response(503, "queue_unavailable", headers={"Retry-After": "2"})
    try:
        archived = await door.storage.audit_page(cursor, limit)
    except StorageUnavailable:
        return error_response(503, "status_unavailable", headers={"Retry-After": "2"})
    entries = {row["stream_id"]: _from_table(row) for row in archived}
    for entry_id, fields in streamed:
        entries.setdefault(entry_id.decode(), _from_stream(entry_id, fields))
    ordered = sorted(entries.values(), key=lambda entry: _key(entry["id"]), reverse=True)[:limit]
    next_cursor = ordered[-1]["id"] if len(ordered) == limit else None
    return json_response(200, {"entries": ordered, "next_cursor": next_cursor})
