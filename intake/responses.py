"""JSON responses of the public contract, pre-encoded where they never vary.

Error bodies carry a stable code and a fixed English message: never a value
from the request, so no personal data can reach a response.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import orjson
from aiohttp import web

from intake.errors import (
    BodyTimedOut,
    BodyTooLarge,
    ClientLimited,
    InvalidIdempotencyKey,
    InvalidRegistration,
    MalformedBody,
    NeverIssued,
    RequestRefused,
)

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

MESSAGES: Mapping[str, str] = {
    "unsupported_media_type": "The request body must be sent as application/json.",
    "payload_too_large": "The request body is larger than 4 KiB.",
    "malformed_json": "The request body is not valid JSON.",
    "invalid_idempotency_key": "Idempotency-Key must be 1-64 characters of A-Z, a-z, 0-9, _ or -.",
    "validation_failed": "Some fields are missing or invalid; see fields.",
    "request_timeout": "The request body did not arrive in time.",
    "admission_limited": "Too many registrations right now; retry after the given delay.",
    "client_limited": "Too many requests from this address; retry after the given delay.",
    "queued": "You have a place in the waiting room's line; see queue for your position.",
    "invalid_ticket": "The waiting room ticket is malformed, not ours, or for another NIK.",
    "ticket_expired": "The waiting room ticket has expired; submit again to rejoin the line.",
    "ticket_used": "This waiting room ticket already admitted a registration; see queue.",
    "backlog_full": "The registration queue is full; retry after the given delay.",
    "queue_unavailable": "The registration queue is unavailable; retry after the given delay.",
    "outcome_unknown": "The registration may or may not have been queued; retry after the given"
                       " delay with the same Idempotency-Key to learn which.",
    "intake_closed": "Registration is closed right now.",
    "status_unavailable": "Registration status cannot be read right now; try again later.",
    "not_found": "No such registration (it may still be queued).",
    "nothing_to_resend": "This registration has no verification email to send again.",
    "resend_too_soon": "The verification email was requested lately; retry after the given delay.",
    "invalid_token": "The verification link is missing, malformed or not valid.",
    "token_expired": "The verification link has expired.",
    "wave_not_open": "The wave has not opened yet; its draw is published at the opening.",
    "unauthorized": "A valid admin bearer token is required.",
    "wave_started": "The wave's pre-queue has started; it can no longer be rescheduled.",
    "wave_open": "The wave has opened; it can no longer be cancelled.",
    "method_not_allowed": "This method is not allowed here.",
    "malformed_request": "The request is not well-formed HTTP.",
    "internal_error": "An unexpected error occurred.",
}


def error_body(code: str, fields: Mapping[str, str] | None = None,
               unknown_fields: int = 0) -> bytes:
    """The contract's error body for a code (and field codes for validation).

    `unknown_fields` counts the body's unknown keys, which `fields` names only
    as `_unknown`: a key is client input too, and is never quoted back.
    """
    error: dict[str, object] = {"code": code, "message": MESSAGES[code]}
    if fields is not None:
        error["fields"] = fields
    if unknown_fields:
        error["unknown_fields"] = unknown_fields
    return orjson.dumps({"error": error})


# Bodies that never change, encoded once.
_STATIC_BODIES: dict[str, bytes] = {code: error_body(code) for code in MESSAGES}


def error_response(
    status: int,
    code: str,
    *,
    fields: Mapping[str, str] | None = None,
    unknown_fields: int = 0,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An error response of the contract's shape."""
    body = _STATIC_BODIES[code] if fields is None else error_body(code, fields, unknown_fields)
    all_headers = {"Content-Type": JSON_CONTENT_TYPE}
    if headers:
        all_headers.update(headers)
    return web.Response(status=status, body=body, headers=all_headers)


def json_response(
    status: int, payload: object, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response with the contract's content type."""
    all_headers = {"Content-Type": JSON_CONTENT_TYPE}
    if headers:
        all_headers.update(headers)
    return web.Response(status=status, body=orjson.dumps(payload), headers=all_headers)


# What each refusal answers: status, code, and whether the connection closes.
_REFUSALS: Final[Mapping[type[RequestRefused], tuple[int, str, bool]]] = {
    # The rest of the body is never read: close instead of draining it.
    BodyTooLarge: (413, "payload_too_large", True),
    BodyTimedOut: (408, "request_timeout", True),
    ClientLimited: (429, "client_limited", False),
    NeverIssued: (404, "not_found", False),
    MalformedBody: (400, "malformed_json", False),
    InvalidIdempotencyKey: (400, "invalid_idempotency_key", False),
}


def refusal(error: RequestRefused) -> web.Response:
    """The contract's answer to a refused request."""
    if isinstance(error, InvalidRegistration):
        return error_response(422, "validation_failed", fields=error.fields,
                              unknown_fields=error.unknown_fields)
    status, code, closes = _REFUSALS[type(error)]
    response = error_response(status, code, headers=error.headers)
    if closes:
        response.force_close()
    return response
