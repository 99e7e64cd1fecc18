"""The waiting room's HTTP: ticket answers, joining, polling and leaving (docs/waiting-room.md).

A poll (GET /v1/queue/tickets/{ticket}) of a waiting ticket is answered from
the door's copy of the line (queueing/line.py) with no Redis round trip; the
ticket's signature is checked here, locally.
"""

from __future__ import annotations

import datetime
import math
from typing import Any, Final

import orjson
from aiohttp import web

from intake import queue_metrics
from intake.nik import nik_birth_date
from intake.responses import JSON_CONTENT_TYPE, MESSAGES, error_response, json_response
from intake.state import DOOR
from queueing.line import Line, LineUnknown, Place, TicketExpired, TicketNotOurs, TicketUsedError
from queueing.queue_tickets import InvalidTicket, Ticket
from queueing.redis_client import REDIS_UNAVAILABLE

AUTH_SCHEME: Final = "Queue "
TICKETS_PATH: Final = "/v1/queue/tickets"
RETRY_AFTER_UNAVAILABLE: Final = "2"


def _rfc3339(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ticket_object(place: Place) -> dict[str, Any]:
    """A place as the contract's ticket object."""
    ticket = place.ticket
    waiting_or_prequeue = place.state in ("waiting", "prequeue")
    return {
        "ticket": place.token,
        "ticket_id": ticket.ticket_id.hex(),
        "wave": ticket.wave,
        "state": place.state,
        "position": ticket.position or None,
        "ahead": place.ahead,
        "eta_seconds": ({"p50": math.ceil(place.eta[0]), "p90": math.ceil(place.eta[1])}
                        if place.eta is not None and waiting_or_prequeue else None),
        "opens_at": _rfc3339(place.opens_at) if place.opens_at else None,
        "turn_valid_until": (_rfc3339(place.turn_valid_until)
                             if place.turn_valid_until is not None else None),
        "registration_id": (_uuid(place.registration_id)
                            if place.registration_id is not None else None),
        "poll_after_seconds": math.ceil(place.poll_after),
        "status_url": f"{TICKETS_PATH}/{place.token}",
    }


def _uuid(raw: bytes) -> str:
    hexed = raw.hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def retry_after(place: Place) -> str:
    """Seconds until the place is worth asking about again (its ETA, at least one)."""
    wait = place.eta[0] if place.eta is not None else place.poll_after
    return str(max(1, math.ceil(wait)))


def queued_response(status: int, code: str, place: Place) -> web.Response:
    """A refusal that carries the person's place: 429 `queued`, 503 `backlog_full`, …"""
    body = {"error": error_body_fields(code), "queue": ticket_object(place)}
    return json_response(status, body, headers={
        "Retry-After": retry_after(place),
        "Location": f"{TICKETS_PATH}/{place.token}",
    })


def error_body_fields(code: str) -> dict[str, str]:
    """The contract's error object for a code (the fixed English message)."""
    return {"code": code, "message": MESSAGES[code]}


def ticket_error_response(error: Exception) -> web.Response:
    """The answer to a ticket the line cannot honour."""
    if isinstance(error, TicketUsedError):
        queue_metrics.count_queue_event("reused")
        return queued_response(409, "ticket_used", error.place)
    if isinstance(error, TicketExpired):
        return queued_response(410, "ticket_expired", error.place)
    if isinstance(error, InvalidTicket | TicketNotOurs):
        queue_metrics.count_queue_event("invalid")
        return error_response(403, "invalid_ticket")
    if isinstance(error, (LineUnknown, *REDIS_UNAVAILABLE)):
        return error_response(503, "queue_unavailable",
                              headers={"Retry-After": RETRY_AFTER_UNAVAILABLE})
    raise error


def ticket_in_header(line: Line, header: str | None) -> Ticket | None:
    """The ticket an `Authorization: Queue <ticket>` header carries, or None without one.

    Raises InvalidTicket for a Queue header whose ticket does not verify.
    """
    if header is None or not header.startswith(AUTH_SCHEME):
        return None
    return line.signer.verify(header[len(AUTH_SCHEME):].strip())


def _line(request: web.Request) -> Line | None:
    return request.app[DOOR].admission.line


def _disabled() -> web.Response:
    return error_response(404, "not_found")


async def join(request: web.Request) -> web.Response:
    """POST /v1/queue/tickets: a place for this NIK (the same one again if it has one)."""
    line = _line(request)
    if line is None:
        return _disabled()
    door = request.app[DOOR]
    if request.content_type != "application/json":
        return error_response(415, "unsupported_media_type")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error_response(400, "malformed_json")
    nik = body.get("nik") if isinstance(body, dict) else None
    problem = _nik_problem(nik, door.calendar.today())
    if problem is not None:
        return error_response(422, "validation_failed", fields={"nik": problem})
    assert isinstance(nik, str)
    try:
        place = await line.join(door.admission.sealing.hasher.digest(nik))
    except TicketExpired:
        return error_response(503, "intake_closed", headers={"Retry-After": "300"})
    except (*REDIS_UNAVAILABLE, LineUnknown):
        return error_response(503, "queue_unavailable",
                              headers={"Retry-After": RETRY_AFTER_UNAVAILABLE})
    queue_metrics.count_queue_event("issued")
    return json_response(202, ticket_object(place),
                         headers={"Location": f"{TICKETS_PATH}/{place.token}"})


def _nik_problem(nik: object, today: datetime.date) -> str | None:
    """The NIK's field code as registration checks it (`required`, `wrong_type`, a rule)."""
    if nik is None:
        return "required"
    if not isinstance(nik, str):
        return "wrong_type"
    parsed = nik_birth_date(nik, today)
    return parsed if isinstance(parsed, str) else None


async def poll(request: web.Request) -> web.Response:
    """GET /v1/queue/tickets/{ticket}: where the ticket stands (no Redis while it waits)."""
    line = _line(request)
    if line is None:
        return _disabled()
    queue_metrics.count_queue_event("polled")
    try:
        token = request.match_info["ticket"]
        place = await line.place(line.signer.verify(token), token)
    except Exception as exc:  # each ticket error has its answer; anything else re-raises
        return ticket_error_response(exc)
    return json_response(200, ticket_object(place))


async def leave(request: web.Request) -> web.Response:
    """DELETE /v1/queue/tickets/{ticket}: free the place."""
    line = _line(request)
    if line is None:
        return _disabled()
    try:
        ticket = line.signer.verify(request.match_info["ticket"])
        await line.leave(ticket)
    except Exception as exc:
        return ticket_error_response(exc)
    queue_metrics.count_queue_event("left")
    return web.Response(status=204, headers={"Content-Type": JSON_CONTENT_TYPE})


def add_queue_routes(router: web.UrlDispatcher) -> None:
    """The waiting room's public routes."""
    router.add_post(TICKETS_PATH, join, name="queue.join")
    router.add_get(TICKETS_PATH + "/{ticket}", poll, name="queue.poll", allow_head=False)
    router.add_delete(TICKETS_PATH + "/{ticket}", leave, name="queue.leave")
