"""The admin port's waves: list them with the line in force, schedule, cancel.

`GET /admin/v1/waves` is audited by the admin guard as every read is;
`PUT` and `DELETE /admin/v1/waves/{wave}` audit themselves, in one MULTI
with the change (queueing/waves.py), and a change refused for its content is
audited with the reason (field names and codes, never the values sent).
"""

from __future__ import annotations

import asyncio
import datetime
import math
import time
from collections.abc import Mapping
from typing import Any, Final

import orjson
from aiohttp import web

from intake.admin import ADMIN_ACTOR
from intake.door import Door
from intake.errors import IntakeError
from intake.responses import error_response, json_response
from intake.state import DOOR
from intake.wave_routes import rfc3339, schedule_view
from queueing.audit import append_audit
from queueing.keys import STANDING_WAVE
from queueing.redis_client import REDIS_UNAVAILABLE
from queueing.waves import (
    CANCEL_ACTION,
    SCHEDULE_ACTION,
    WAVE_NAME,
    LineSummary,
    WaveError,
    WaveSchedule,
    cancel_wave,
    line_summary,
    read_waves,
    schedule_wave,
    wave_in_force,
)

TIMES: Final = ("prequeue_from", "opens_at", "closes_at")
# The latest time taken (2100-01-01): past it is a typo, not a wave.
LATEST: Final = 4_102_444_800
RETRY_AFTER: Final = {"Retry-After": "2"}
# What each WaveError answers: status, code, and the field codes of a 422.
_REFUSALS: Final[Mapping[str, tuple[int, str, dict[str, str] | None]]] = {
    "invalid_name": (422, "validation_failed", {"wave": "invalid_format"}),
    "reserved_name": (422, "validation_failed", {"wave": "reserved"}),
    "invalid_schedule": (422, "validation_failed", {"opens_at": "out_of_order"}),
    "already_closed": (422, "validation_failed", {"closes_at": "in_the_past"}),
    "wave_started": (409, "wave_started", None),
    "unknown_wave": (404, "not_found", None),
    "wave_open": (409, "wave_open", None),
}


class _Refused(IntakeError):
    """A wave change refused before Redis: the answer's status, code and field codes."""

    def __init__(self, status: int, code: str, fields: dict[str, str] | None = None,
                 unknown: int = 0) -> None:
        super().__init__(code)
        self.status, self.code, self.fields, self.unknown = status, code, fields, unknown


def release_rate(door: Door) -> float:
    """Positions released per second: the configured rate, else the admission rate in force."""
    configured = door.settings.waiting_room.release_rate
    return configured if configured > 0 else door.live.policy.rate_per_second


def line_view(summary: LineSummary, rate: float, now: float) -> dict[str, Any]:
    """The line in force as the admin API, the ops page and `gelombang status` show it."""
    eta = summary.eta_of_last_seconds(rate, now)
    return {"wave": summary.wave, **schedule_view(summary.schedule),
            "phase": summary.phase(now), "waiting": summary.waiting,
            "prequeue": summary.prequeue, "drawn": summary.drawn, "served": summary.served,
            "tail": summary.tail, "expired": summary.expired, "used": summary.used,
            "release_rate": rate,
            "eta_last_seconds": None if eta is None else math.ceil(eta),
            "seed_sha256": summary.seed_sha256}


def wave_view(schedule: WaveSchedule, now: float) -> dict[str, Any]:
    """One scheduled wave: its name, times and phase."""
    return {"wave": schedule.wave, **schedule_view(schedule), "phase": schedule.phase(now)}


async def get_waves(request: web.Request) -> web.Response:
    """The scheduled waves and the line in force."""
    door = request.app[DOOR]
    now = time.time()
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            waves = await read_waves(door.redis)
            current = wave_in_force(waves, now)
            summary = await line_summary(
                door.redis, STANDING_WAVE if current is None else current.wave, now=now)
    except REDIS_UNAVAILABLE:
        return error_response(503, "queue_unavailable", headers=RETRY_AFTER)
    return json_response(200, {
        "now": rfc3339(int(now)),
        "enabled": door.settings.waiting_room.enabled,
        "waves": [wave_view(w, now) for w in waves],
        "in_force": line_view(summary, release_rate(door), now),
    })


def _time(value: object) -> int:
    """Unix seconds from a JSON integer or an RFC 3339 string; raises ValueError(field code)."""
    if isinstance(value, bool):
        raise ValueError("wrong_type")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("invalid_format") from None
        if moment.tzinfo is None:
            raise ValueError("invalid_format")  # RFC 3339 names its offset
        seconds = math.floor(moment.timestamp())
    else:
        raise ValueError("wrong_type")
    if not 0 <= seconds < LATEST:
        raise ValueError("out_of_range")
    return seconds


def checked_schedule(wave: str, body: object) -> WaveSchedule:
    """The schedule a PUT asks for; raises _Refused with every problem found."""
    if not WAVE_NAME.fullmatch(wave):
        raise _Refused(422, "validation_failed", {"wave": "invalid_format"})
    if not isinstance(body, dict):
        raise _Refused(422, "validation_failed", {"body": "wrong_type"})
    problems: dict[str, str] = {}
    times: dict[str, int] = {}
    for name in TIMES:
        if name not in body:
            problems[name] = "required"
            continue
        try:
            times[name] = _time(body[name])
        except ValueError as exc:
            problems[name] = str(exc)
    # Other keys are the client's text: counted, never named back.
    unknown = sum(1 for name in body if name not in TIMES)
    if unknown:
        problems["_unknown"] = "unknown_field"
    if not problems:
        if times["prequeue_from"] > times["opens_at"]:
            problems["prequeue_from"] = "out_of_order"
        if times["opens_at"] >= times["closes_at"]:
            problems["closes_at"] = "out_of_order"
    if problems:
        raise _Refused(422, "validation_failed", problems, unknown)
    return WaveSchedule(wave, times["prequeue_from"], times["opens_at"], times["closes_at"])


async def put_wave(request: web.Request) -> web.Response:
    """Schedule a wave, or reschedule one whose pre-queue has not started; audited."""
    wave = request.match_info["wave"]
    try:
        if request.content_type != "application/json":
            raise _Refused(415, "unsupported_media_type")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise _Refused(400, "malformed_json") from None
        schedule = checked_schedule(wave, body)
    except _Refused as refused:
        return await _refuse(request, SCHEDULE_ACTION, refused)
    door = request.app[DOOR]
    now = time.time()
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            created = await schedule_wave(door.redis, schedule, actor=ADMIN_ACTOR,
                                          source=_source(request), now=now)
            summary = await line_summary(door.redis, wave, now=now)
    except WaveError as exc:
        return await _refuse(request, SCHEDULE_ACTION, _refusal(exc))
    except REDIS_UNAVAILABLE:
        return error_response(503, "queue_unavailable", headers=RETRY_AFTER)
    return json_response(200, {**wave_view(schedule, now), "created": created,
                               "seed_sha256": summary.seed_sha256})


async def delete_wave(request: web.Request) -> web.Response:
    """Cancel a wave that has not opened; audited."""
    wave = request.match_info["wave"]
    if not WAVE_NAME.fullmatch(wave):
        return await _refuse(request, CANCEL_ACTION, _Refused(404, "not_found"))
    door = request.app[DOOR]
    now = time.time()
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            cancelled = await cancel_wave(door.redis, wave, actor=ADMIN_ACTOR,
                                          source=_source(request), now=now)
    except WaveError as exc:
        return await _refuse(request, CANCEL_ACTION, _refusal(exc))
    except REDIS_UNAVAILABLE:
        return error_response(503, "queue_unavailable", headers=RETRY_AFTER)
    return json_response(200, {**wave_view(cancelled, now), "cancelled": True})


def _refusal(error: WaveError) -> _Refused:
    status, code, fields = _REFUSALS[error.code]
    return _Refused(status, code, fields)


def _source(request: web.Request) -> str:
    return request.remote or "unknown"


async def _refuse(request: web.Request, action: str, refused: _Refused) -> web.Response:
    """Audit a refused change (the wave when its name is valid, the field codes), then answer."""
    door = request.app[DOOR]
    details: dict[str, Any] = {"status": refused.status, "code": refused.code}
    wave = request.match_info["wave"]
    if WAVE_NAME.fullmatch(wave):
        details["wave"] = wave
    if refused.fields:
        details["fields"] = refused.fields
    if refused.unknown:
        details["unknown_fields"] = refused.unknown
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            await append_audit(door.redis, actor=ADMIN_ACTOR, source=_source(request),
                               action=f"{action}.refused", details=details)
    except REDIS_UNAVAILABLE:
        # As for every admin action: no audit entry, no answer but 503.
        return error_response(503, "queue_unavailable", headers=RETRY_AFTER)
    return error_response(refused.status, refused.code, fields=refused.fields,
                          unknown_fields=refused.unknown)


def build_wave_admin_routes(app: web.Application) -> None:
    """Attach the waves' admin routes (their names are the actions the audit trail records)."""
    app.router.add_get("/admin/v1/waves", get_waves, name="waves.read", allow_head=False)
    app.router.add_put("/admin/v1/waves/{wave}", put_wave, name=SCHEDULE_ACTION)
    app.router.add_delete("/admin/v1/waves/{wave}", delete_wave, name=CANCEL_ACTION)
