"""GET /v1/queue/waves/{wave} and …/draw: a wave's schedule and its lottery, for anyone to check.

The seed's SHA-256 is published from the wave's scheduling, the seed itself
and the drawn order only from its opening (docs/waiting-room.md, "The lottery,
verifiable"). Reads are answered from a per-process memory refreshed at most
once a second (the list of waves, each wave's figures), and the draw's pages
once settled after the opening (the draw never changes then), so a crowd
reloading the page costs Redis a few reads a second per door, not one per
request.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import orjson
from aiohttp import web

from intake.responses import JSON_CONTENT_TYPE, error_response
from intake.state import DOOR
from queueing.keys import STANDING_WAVE, WaveKeys
from queueing.redis_client import REDIS_UNAVAILABLE, RedisClient
from queueing.waves import WAVE_NAME, LineSummary, WaveSchedule, line_summary, read_waves

# Ticket ids per page of the draw: 10,000 (about 350 KB of JSON).
DRAW_PAGE: Final = 10_000
# The largest `from` taken (digits): past any real draw, within what ZRANGE parses.
FROM_DIGITS: Final = 12
# How long a list of waves or a wave's figures is served from memory.
FRESH_SECONDS: Final = 1.0
# Pages of the draw kept per process (at most ~11 MB); kept only once the wave has
# been open this long, so a door whose clock runs ahead never keeps a page that a
# join at the edge of the opening could still change.
KEPT_PAGES: Final = 32
SETTLE_SECONDS: Final = 60.0
RETRY_AFTER: Final = {"Retry-After": "2"}


def rfc3339(seconds: int) -> str:
    """Unix seconds as the contract writes times (UTC, `Z`)."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def schedule_view(schedule: WaveSchedule | None) -> dict[str, str | None]:
    """A schedule's times in RFC 3339 (null for the standing line)."""
    if schedule is None:
        return {"prequeue_from": None, "opens_at": None, "closes_at": None}
    return {"prequeue_from": rfc3339(schedule.prequeue_from),
            "opens_at": rfc3339(schedule.opens_at), "closes_at": rfc3339(schedule.closes_at)}


def public_view(summary: LineSummary, now: float) -> dict[str, Any]:
    """GET /v1/queue/waves/{wave}'s body."""
    return {"wave": summary.wave, **schedule_view(summary.schedule),
            "phase": summary.phase(now), "seed_sha256": summary.seed_sha256,
            "seed": summary.seed, "drawn": summary.drawn, "served": summary.served,
            "tail": summary.tail}


class WaveReads:
    """This process's memory of the waves' public figures (see the module's docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = asyncio.Lock()
        self._waves: dict[str, WaveSchedule] = {}
        self._waves_until = float("-inf")
        self._figures: dict[str, tuple[float, bytes]] = {}
        self._pages: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    async def schedule(self, redis: RedisClient, wave: str) -> WaveSchedule | None:
        """A scheduled wave's schedule, or None when no such wave is scheduled."""
        async with self._lock:
            if self._clock() >= self._waves_until:
                self._waves = {w.wave: w for w in await read_waves(redis)}
                self._waves_until = self._clock() + FRESH_SECONDS
                # Figures of waves no longer scheduled (cancelled) are forgotten.
                self._figures = {w: kept for w, kept in self._figures.items()
                                 if w in self._waves or w == STANDING_WAVE}
        return self._waves.get(wave)

    async def figures(self, redis: RedisClient, wave: str, now: float) -> bytes:
        """The encoded body of GET /v1/queue/waves/{wave}."""
        kept = self._figures.get(wave)
        if kept is not None and self._clock() < kept[0]:
            return kept[1]
        body = orjson.dumps(public_view(await line_summary(redis, wave, now=now), now))
        self._figures[wave] = (self._clock() + FRESH_SECONDS, body)
        return body

    async def page(self, redis: RedisClient, schedule: WaveSchedule, start: int,
                   now: float) -> bytes:
        """The encoded page of the draw from index `start` (only after the opening)."""
        key = (schedule.wave, start)
        kept = self._pages.get(key)
        if kept is not None:
            self._pages.move_to_end(key)
            return kept
        members: Any = await redis.zrange(WaveKeys(schedule.wave).draw, start,
                                                  start + DRAW_PAGE - 1)
        body = orjson.dumps({"wave": schedule.wave, "from": start,
                             "ticket_ids": [member[-16:].hex() for member in members]})
        if now >= schedule.opens_at + SETTLE_SECONDS:
            self._pages[key] = body
            if len(self._pages) > KEPT_PAGES:
                self._pages.popitem(last=False)
        return body


WAVE_READS: web.AppKey[WaveReads] = web.AppKey("wave_reads", WaveReads)


def _json(body: bytes) -> web.Response:
    return web.Response(status=200, body=body, headers={"Content-Type": JSON_CONTENT_TYPE})


async def get_wave(request: web.Request) -> web.Response:
    """A wave's schedule, seed hash (seed after the opening) and counters."""
    wave = request.match_info["wave"]
    door = request.app[DOOR]
    reads = request.app[WAVE_READS]
    if not WAVE_NAME.fullmatch(wave):
        return error_response(404, "not_found")
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            if wave != STANDING_WAVE and await reads.schedule(door.redis, wave) is None:
                return error_response(404, "not_found")
            return _json(await reads.figures(door.redis, wave, time.time()))
    except REDIS_UNAVAILABLE:
        return error_response(503, "queue_unavailable", headers=RETRY_AFTER)


def _start(request: web.Request) -> int | None:
    raw = request.query.get("from", "0")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= FROM_DIGITS):
        return None
    return int(raw)


async def get_draw(request: web.Request) -> web.Response:
    """A page of the drawn ticket ids in position order, once the wave has opened."""
    wave = request.match_info["wave"]
    door = request.app[DOOR]
    if not WAVE_NAME.fullmatch(wave):
        return error_response(404, "not_found")
    start = _start(request)
    if start is None:
        return error_response(422, "validation_failed", fields={"from": "invalid_format"})
    if wave == STANDING_WAVE:  # always open, never drawn
        return _json(orjson.dumps({"wave": wave, "from": start, "ticket_ids": []}))
    reads = request.app[WAVE_READS]
    now = time.time()
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            schedule = await reads.schedule(door.redis, wave)
            if schedule is None:
                return error_response(404, "not_found")
            if now < schedule.opens_at:
                return error_response(409, "wave_not_open")
            return _json(await reads.page(door.redis, schedule, start, now))
    except REDIS_UNAVAILABLE:
        return error_response(503, "queue_unavailable", headers=RETRY_AFTER)


def build_wave_routes(app: web.Application) -> None:
    """Attach the public wave routes (and their memory) to the public app."""
    app[WAVE_READS] = WaveReads()
    app.router.add_get("/v1/queue/waves/{wave}", get_wave, name="waves.public_read",
                       allow_head=False)
    app.router.add_get("/v1/queue/waves/{wave}/draw", get_draw, name="waves.draw",
                       allow_head=False)
