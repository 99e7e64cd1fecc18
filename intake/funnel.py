"""GET /admin/v1/funnel: where the deployment's registrations are, cheaply.

Every figure but the backlog is a counter the workers keep in the same
transactions that change the table (so `stored == accepted + duplicate +
ineligible` always holds); the backlog is each stream's length. No count(*)
over 42 million rows: the call is cheap enough for a dashboard every second.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from intake.responses import error_response, json_response
from intake.state import DOOR
from intake.storage import StorageUnavailable
from queueing.redis_client import REDIS_UNAVAILABLE

# The contract's counters, in its order; each is a funnel_counts name.
COUNTERS: Final = ("stored", "accepted", "duplicate", "ineligible", "email_sent",
                   "email_verified", "nik_verified", "nik_rejected", "dead_letter")


async def get_funnel(request: web.Request) -> web.Response:
    """Counts for the whole deployment, and the backlog per stream."""
    door = request.app[DOOR]
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            backlog = await door.backlog()
    except REDIS_UNAVAILABLE:
        return error_response(503, "queue_unavailable", headers={"Retry-After": "2"})
    try:
        counts = await door.storage.funnel()
    except StorageUnavailable:
        return error_response(503, "status_unavailable", headers={"Retry-After": "2"})
    streams = {door.partitions[index].stream: length for index, length in backlog.items()}
    return json_response(200, {
        "queued": sum(streams.values()),
        **{name: counts.get(name, 0) for name in COUNTERS},
        "backlog": streams,
    })
