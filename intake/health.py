"""Health, readiness and the OpenAPI document of the public port."""

from __future__ import annotations

import asyncio
from importlib import resources

from aiohttp import web

from intake.responses import JSON_CONTENT_TYPE, json_response
from intake.state import DOOR
from queueing.redis_client import REDIS_UNAVAILABLE

OPENAPI_DOCUMENT = resources.files("intake").joinpath("openapi.json").read_bytes()


async def healthz(request: web.Request) -> web.Response:
    """200 while the process runs."""
    return json_response(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 only when Redis answers and the process is not shutting down."""
    door = request.app[DOOR]
    if door.draining:
        return json_response(503, {"status": "draining"})
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            await door.redis.ping()
    except REDIS_UNAVAILABLE:
        return json_response(503, {"status": "queue_unavailable"})
    return json_response(200, {"status": "ready"})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of the public port."""
    return web.Response(body=OPENAPI_DOCUMENT, headers={"Content-Type": JSON_CONTENT_TYPE})
