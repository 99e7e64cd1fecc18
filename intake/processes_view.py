"""GET /admin/v1/processes: every door and worker process's counters, and their totals.

Read from the reports each process writes to Redis (queueing/process_reports.py),
so any door answers for the whole deployment, not only for its own pod. Rates
are left to the reader (two reads, per process, by `reported_at`): a total
whose processes come and go is not a counter, but each process's own is.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from intake.responses import error_response, json_response
from intake.state import DOOR
from queueing.process_reports import read_reports, totals
from queueing.redis_client import REDIS_UNAVAILABLE


async def get_processes(request: web.Request) -> web.Response:
    """One row per process that reported (stale ones marked), and each role's totals."""
    door = request.app[DOOR]
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            reports = await read_reports(door.redis)
    except REDIS_UNAVAILABLE:
        return error_response(503, "queue_unavailable", headers={"Retry-After": "2"})
    now = time.time()
    return json_response(200, {
        "processes": [{
            "role": r.role, "name": r.name, "host": r.host, "pid": r.pid,
            "reported_at": r.reported_at, "age_seconds": round(r.age(now), 3),
            "stale": r.stale(now), "counters": dict(r.counters),
        } for r in reports],
        "totals": totals(reports, now),
    })
