"""The registration routes' HTTP: the contract's checks in order, then the answers.

POST /v1/registrations speaks HTTP only: what to do with a valid registration
is `door.admission.submit` (queueing/intake_admission.py); its Decision, or
its error, becomes an answer here, and refusals of the request itself are
raised (intake/errors.py) and answered by `intake.responses.refusal`.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import re
import uuid
from collections.abc import Sequence
from typing import Final

from aiohttp import web

from intake import metrics, queue_metrics
from intake.client_limit import ClientLimiter, client_address
from intake.door import Door
from intake.errors import (
    BodyTimedOut,
    BodyTooLarge,
    ClientLimited,
    InvalidIdempotencyKey,
    InvalidRegistration,
    NeverIssued,
    RequestRefused,
)
from intake.queue_routes import queued_response, ticket_error_response, ticket_in_header
from intake.registration_body import decode_registration
from intake.responses import JSON_CONTENT_TYPE, error_response, json_response, refusal
from intake.state import DOOR
from intake.storage import StorageUnavailable
from intake.validation import UNKNOWN, unknown_field_count, validate_registration
from queueing.admission import Decision, Outcome
from queueing.errors import OutcomeUnknown, QueueingError, QueueUnavailable
from queueing.grouping import Overloaded, Shed
from queueing.ids import Provenance, format_uuid, uuid7_unix_ms
from queueing.line import TicketError
from queueing.queue_tickets import InvalidTicket

MAX_BODY_BYTES: Final = 4096
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Only the canonical 8-4-4-4-12 form names a registration (uuid.UUID accepts more).
CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# Retry-After for the 503s, where no bucket says when to come back.
RETRY_AFTER_BACKLOG_FULL: Final = "30"
RETRY_AFTER_UNAVAILABLE: Final = "2"
RETRY_AFTER_CLOSED: Final = "300"
RETRY_AFTER_OVERLOADED: Final = "1"
# The policy name of the IETF RateLimit fields.
POLICY_NAME: Final = '"admission"'
# Each verification kind of the priority lane, and its column.
_CHECKS: Final = (("email", "email_verification"), ("nik", "nik_verification"))


async def create_registration(request: web.Request) -> web.Response:
    """POST /v1/registrations as a route of the application (see `register`)."""
    return await register(request.app[DOOR], request)


async def register(door: Door, request: web.BaseRequest) -> web.Response:
    """Check the request in the contract's order, submit it, and answer.

    Needs nothing of the application (no route, no `request.app`): the door's
    server calls it straight for POST /v1/registrations (intake/hot_path.py).
    """
    try:
        if door.client_limiter is not None:
            spend_client_token(door.client_limiter, request)
        if request.content_type != "application/json":
            return error_response(415, "unsupported_media_type")
        raw = await _read_body(request, door.settings.public.body_timeout_seconds)
        headers = request.headers
        decision = await decide(door, raw, headers.get("Idempotency-Key"),
                                headers.get("Authorization"))
    except NOT_ADMITTED as exc:
        return not_admitted(exc)
    return answer(door, decision)


# What `decide` raises for a registration it does not admit; `not_admitted` answers each.
NOT_ADMITTED: Final = (RequestRefused, InvalidTicket, TicketError, QueueingError)


async def decide(door: Door, raw: bytes, idempotency_key: str | None,
                 authorization: str | None) -> Decision:
    """Admission's decision on a registration body whose request passed the HTTP checks
    (client limit, media type, size), in the contract's order from the body on.

    Raises MalformedBody, InvalidIdempotencyKey, InvalidRegistration, InvalidTicket,
    the line's TicketError types, or admission's QueueingError types.
    """
    body = decode_registration(raw)
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise InvalidIdempotencyKey
    checked = validate_registration(body, door.calendar.today())
    if isinstance(checked, dict):
        raise InvalidRegistration(checked, unknown_field_count(body) if UNKNOWN in checked else 0)
    admission = door.admission
    line = admission.line
    ticket = None if line is None else ticket_in_header(line, authorization)
    decision = await admission.submit(checked, idempotency_key, ticket)
    if decision.outcome is Outcome.ADMITTED and decision.place is not None:
        queue_metrics.admitted_on_turn(decision.place.ticket, door.order_watch)
    return decision


def not_admitted(error: Exception) -> web.Response:
    """The answer to one of NOT_ADMITTED."""
    if isinstance(error, RequestRefused):
        return refusal(error)
    if isinstance(error, QueueingError):
        return _not_decided(error)
    return ticket_error_response(error)


def _not_decided(error: QueueingError) -> web.Response:
    """Admission's failure, as the contract words it: never "nothing stored" for a stored one."""
    if isinstance(error, Shed):
        # Never sent: its partition's lost reply is being found out.
        metrics.UNAVAILABLE.inc()
        return unavailable("queue_unavailable", RETRY_AFTER_UNAVAILABLE)
    if isinstance(error, QueueUnavailable):
        # Certainly not stored: Redis refused, was not reached, or the call
        # was fenced (counted by the round trip's metrics).
        return unavailable("queue_unavailable", RETRY_AFTER_UNAVAILABLE)
    if isinstance(error, OutcomeUnknown):
        # Sent, and Redis did not say what it did in time: it may be queued.
        # Never "nothing stored"; a retry with the same key learns which.
        return unavailable("outcome_unknown", RETRY_AFTER_UNAVAILABLE)
    if isinstance(error, Overloaded):
        metrics.OVERLOADED.inc()
        return unavailable("backlog_full", RETRY_AFTER_OVERLOADED)
    raise error  # not one admission raises: a bug, answered 500 by the app


async def _read_body(request: web.BaseRequest, limit_seconds: float) -> bytes:
    """The body (at most 4 KiB); raises BodyTooLarge or BodyTimedOut."""
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        raise BodyTooLarge
    try:
        if request.content.is_eof():
            # The usual case: the whole body came with the head; no timer needed.
            return await request.read()
        async with asyncio.timeout(limit_seconds):
            # The app's client_max_size stops chunked bodies at the same limit.
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge from None
    except TimeoutError:
        raise BodyTimedOut from None


def answer(door: Door, decision: Decision) -> web.Response:
    """The answer to admission's decision."""
    outcome = decision.outcome
    if outcome is Outcome.ADMITTED or outcome is Outcome.REPLAYED:
        assert decision.registration_id is not None
        return _accepted(format_uuid(decision.registration_id))
    if decision.place is not None:
        # Turned away with a place in the waiting room's line (docs/waiting-room.md).
        if outcome is Outcome.BACKLOG_FULL:
            return queued_response(503, "backlog_full", decision.place)
        return queued_response(429, "queued", decision.place)
    if outcome is Outcome.LIMITED:
        return _limited(door, decision.retry_after_ms)
    if outcome is Outcome.BACKLOG_FULL:
        return unavailable("backlog_full", RETRY_AFTER_BACKLOG_FULL)
    return unavailable("intake_closed", RETRY_AFTER_CLOSED)


def _accepted(registration_id: str) -> web.Response:
    status_url = f"/v1/registrations/{registration_id}"
    return web.Response(
        status=202,
        body=accepted_body(registration_id),
        headers={"Content-Type": JSON_CONTENT_TYPE, "Location": status_url},
    )


def accepted_body(registration_id: str) -> bytes:
    """The 202's body: what orjson makes of the contract's three fields, without the dict."""
    return (b'{"registration_id":"%s","status":"queued","status_url":"/v1/registrations/%s"}'
            % (registration_id.encode(), registration_id.encode()))


def _limited(door: Door, retry_after_ms: int) -> web.Response:
    retry_after = max(1, math.ceil(retry_after_ms / 1000))
    policy = door.live.policy
    # A token bucket as the draft's quota policy: `burst` requests per the
    # time the bucket takes to refill from empty.
    window = max(1, math.ceil(policy.burst / policy.rate_per_second))
    return error_response(
        429,
        "admission_limited",
        headers={
            "Retry-After": str(retry_after),
            "RateLimit-Policy": f"{POLICY_NAME};q={policy.burst};w={window}",
            "RateLimit": f"{POLICY_NAME};r=0;t={retry_after}",
        },
    )


def unavailable(code: str, retry_after: str) -> web.Response:
    """A 503 with the contract's code and Retry-After."""
    return error_response(503, code, headers={"Retry-After": retry_after})


def spend_client_token(limiter: ClientLimiter, request: web.BaseRequest) -> None:
    """Spend a token of this request's client; raises ClientLimited once its bucket is empty."""
    spend_token_of(limiter, request.remote, request.headers.getall("X-Forwarded-For", ()))


def spend_token_of(limiter: ClientLimiter, remote: str | None,
                   forwarded_for: Sequence[str]) -> None:
    """Spend a token of the client that a connection's peer address and its
    X-Forwarded-For values name; raises ClientLimited once its bucket is empty."""
    client = client_address(remote, forwarded_for, limiter.trusted)
    retry_after = limiter.take(client)
    if retry_after:
        raise ClientLimited({
            "Retry-After": str(retry_after),
            "RateLimit-Policy": f"{limiter.policy};q={limiter.burst};w={limiter.window_seconds}",
            "RateLimit": f"{limiter.policy};r=0;t={retry_after}",
        })


async def read_registration(request: web.Request) -> web.Response:
    """GET /v1/registrations/{id}: the stored states; `queued` while an issued id is not stored.

    Someone is watching a registration whose checks are pending: they go to
    the priority lane, at most once per hold (docs/verification.md).
    """
    door = request.app[DOOR]
    try:
        registration_id, provenance = allowed_and_named(request, door.read_limiter)
    except RequestRefused as exc:
        return refusal(exc)
    try:
        row = await door.storage.registration(registration_id)
    except StorageUnavailable:
        return unavailable("status_unavailable", RETRY_AFTER_UNAVAILABLE)
    if row is None:
        if provenance is Provenance.ISSUED:
            return _queued(registration_id)
        return error_response(404, "not_found")
    if row["state"] == "accepted":
        waiting = [kind for kind, column in _CHECKS if row[column] == "pending"]
        if waiting:
            await door.prioritise(registration_id.bytes, waiting)
    return json_response(200, {
        "registration_id": str(row["registration_id"]),
        "state": row["state"],
        "email_verification": row["email_verification"],
        "nik_verification": row["nik_verification"],
        "updated_at": rfc3339(row["updated_at"]),
    })


def allowed_and_named(request: web.Request, limiter: ClientLimiter | None
                      ) -> tuple[uuid.UUID, Provenance]:
    """The registration a path names, once the client's bucket allows the request.

    Raises ClientLimited, then NeverIssued (404 without PostgreSQL) for a
    string that is not a canonical UUID and for an id this deployment never
    issued: no valid keyed check and outside the legacy window, which covers
    random and future-dated ids.
    """
    if limiter is not None:
        spend_client_token(limiter, request)
    text = request.match_info["registration_id"]
    if not CANONICAL_UUID.fullmatch(text):
        raise NeverIssued
    registration_id = uuid.UUID(text)
    provenance = request.app[DOOR].ids.provenance(registration_id.bytes)
    if provenance is Provenance.NEVER:
        raise NeverIssued
    return registration_id, provenance


def _queued(registration_id: uuid.UUID) -> web.Response:
    # Admitted, not stored yet: nothing is known but when it was admitted (the id's time).
    admitted = datetime.datetime.fromtimestamp(uuid7_unix_ms(registration_id) / 1000,
                                               datetime.UTC)
    return json_response(200, {
        "registration_id": str(registration_id),
        "state": "queued",
        "email_verification": "pending",
        "nik_verification": "pending",
        "updated_at": rfc3339(admitted),
    })


def rfc3339(moment: datetime.datetime) -> str:
    """A UTC time as the contract writes it: `2026-11-22T10:00:00Z`."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
