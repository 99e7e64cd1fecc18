"""After a surge: how many of the registrations answered 202 are stored.

Counted in PostgreSQL when the surge has its DSN, else through the public
status endpoint (an id answers `queued` until it is stored). No registration
answered 202 may be missing (loadtest/thresholds.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from loadtest import preflight


async def loss_check(dsn: str | None, target: str, ids: list[str]) -> dict[str, Any]:
    """How many of the 202s are stored, by PostgreSQL (`dsn`) or by the status endpoint
    of the door at `target`."""
    unique = sorted(set(ids))
    method = "postgresql" if dsn else "status endpoint"
    try:
        if dsn:
            stored, last = await _stored_in_postgres(dsn, unique)
        else:
            stored, last = await _stored_by_status(target, unique), None
    except Exception as exc:
        # PostgreSQL or the door went away after the load: the run cannot be
        # judged, which fails it (thresholds), with the cause on one line.
        return {"method": method, "admitted": len(unique), "stored": None, "missing": None,
                "error": preflight.reason(exc), "last_stored_at": None,
                "repeated_ids": len(ids) - len(unique)}
    return {"method": method, "admitted": len(unique), "stored": stored,
            "missing": len(unique) - stored, "last_stored_at": last,
            "repeated_ids": len(ids) - len(unique)}


async def _stored_in_postgres(dsn: str, ids: list[str]) -> tuple[int, float | None]:
    import uuid

    import asyncpg

    connection = await asyncpg.connect(dsn)
    stored, last = 0, None
    try:
        for start in range(0, len(ids), 10_000):
            chunk = [uuid.UUID(value) for value in ids[start:start + 10_000]]
            row = await connection.fetchrow(
                "SELECT count(*), max(stored_at) FROM registrations "
                "WHERE registration_id = ANY($1::uuid[])", chunk)
            assert row is not None
            stored += int(row[0])
            if row[1] is not None:
                moment = row[1].timestamp()
                last = moment if last is None else max(last, moment)
    finally:
        await connection.close()
    return stored, last


async def _stored_by_status(target: str, ids: list[str]) -> int:
    import aiohttp

    found = 0
    slots = asyncio.Semaphore(32)

    async def check(session: aiohttp.ClientSession, registration_id: str) -> None:
        nonlocal found
        async with slots:
            for _ in range(5):
                async with session.get(f"{target}/v1/registrations/{registration_id}") as reply:
                    if reply.status == 200:
                        # An issued id answers 200 `queued` until it is stored.
                        if (await reply.json()).get("state") != "queued":
                            found += 1
                        return
                    if reply.status == 404:
                        return
                await asyncio.sleep(1.0)  # 503: the store is busy; ask again

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(check(session, rid) for rid in ids))
    return found
