"""POST /v1/registrations/{id}/verification-email: send the verification email again, first.

The email worker sends only for `email_verification = 'pending'`, so a resend
of a `sent` or `failed` email moves it back to `pending` in PostgreSQL, then
puts an email job in the priority lane (queueing/priority.py); a `pending`
one is only put in the lane. Once per `email.resend_interval_seconds` per
registration: the registration's email hold is taken before PostgreSQL is
changed, and a resend that finds a resend's hold answers 429
`resend_too_soon`. The hold is the one a status poll takes: a resend takes a
poll's hold over (the first resend after a poll goes through), and a pending
email whose poll put it in the lane gets no second job.

Order, so that no job can reach a worker before its row is `pending`: the
status read (404, 409; an issued id not stored yet is 409, a forged one 404
without PostgreSQL), the hold (429), the guarded UPDATE, the XADD. A step
that fails after the hold was taken gives the hold back (best effort), so the
client's retry goes through; PostgreSQL or Redis away answers 503
`status_unavailable`. Nothing personal is read, answered or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from typing import Final

from aiohttp import web

from intake.door import Door
from intake.errors import RequestRefused
from intake.registrations import (
    RETRY_AFTER_UNAVAILABLE,
    allowed_and_named,
    unavailable,
)
from intake.responses import error_response, json_response, refusal
from intake.state import DOOR
from intake.storage import StorageUnavailable
from queueing.errors import QueueUnavailable
from queueing.ids import Provenance
from queueing.priority import EMAIL
from queueing.redis_client import REDIS_UNAVAILABLE

# The email states a resend acts on; `verified` and `skipped` have nothing to send.
RESENDABLE: Final = frozenset({"pending", "sent", "failed"})
RESEND_POLICY_NAME: Final = '"resend"'


async def resend_verification_email(request: web.Request) -> web.Response:
    """Send a registration's verification email again, ahead of the backlog."""
    door = request.app[DOOR]
    try:
        registration_id, provenance = allowed_and_named(request, door.client_limiter)
    except RequestRefused as exc:
        return refusal(exc)
    try:
        row = await door.storage.registration(registration_id)
        if row is None:
            # Issued but still queued: its email goes out once it is stored.
            if provenance is Provenance.ISSUED:
                return error_response(409, "nothing_to_resend")
            return error_response(404, "not_found")
        if row["state"] != "accepted" or row["email_verification"] not in RESENDABLE:
            return error_response(409, "nothing_to_resend")
        if row["email_verification"] == "pending":
            return await _first_in_line(door, registration_id.bytes)
        return await _send_again(door, registration_id)
    except (StorageUnavailable, QueueUnavailable):
        return unavailable("status_unavailable", RETRY_AFTER_UNAVAILABLE)


async def _first_in_line(door: Door, registration_id: bytes) -> web.Response:
    """Not sent yet: the hold, and a job in the priority lane unless a poll put one there."""
    left_ms = await _hold(door, registration_id, add_job=True)
    return _too_soon(door, left_ms) if left_ms else _accepted(door)


async def _send_again(door: Door, registration_id: uuid.UUID) -> web.Response:
    """Sent or failed: take the hold, move the email back to pending, add the job."""
    rid = registration_id.bytes
    left_ms = await _hold(door, rid, add_job=False)
    if left_ms:
        return _too_soon(door, left_ms)
    try:
        resend = await door.storage.resend_email(registration_id)
    except StorageUnavailable:
        await _release(door, rid)
        raise
    if resend is None or not resend.moved:
        # Changed since the read: verified by its link (or, the hold having
        # expired meanwhile, made pending by another resend: its job is there).
        await _release(door, rid)
        return error_response(409, "nothing_to_resend")
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            await door.priority.add(EMAIL, rid)
    except REDIS_UNAVAILABLE as exc:
        # The row is pending without a job: the retry finds the hold gone and
        # adds one (as does a status poll, once no hold is left).
        await _release(door, rid)
        raise QueueUnavailable from exc
    return _accepted(door)


async def _hold(door: Door, registration_id: bytes, *, add_job: bool) -> int:
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            return await door.priority.hold_for_resend(registration_id, add_job=add_job)
    except REDIS_UNAVAILABLE as exc:
        raise QueueUnavailable from exc


async def _release(door: Door, registration_id: bytes) -> None:
    # Best effort: a hold that stays only delays the next try by its rest.
    with contextlib.suppress(*REDIS_UNAVAILABLE):
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            await door.priority.release(EMAIL, registration_id)


def _seconds(milliseconds: int) -> int:
    return max(1, math.ceil(milliseconds / 1000))


def _accepted(door: Door) -> web.Response:
    return json_response(202, {"email_verification": "pending",
                               "resend_after_seconds": door.priority.hold_seconds[EMAIL]})


def _too_soon(door: Door, left_ms: int) -> web.Response:
    retry_after = _seconds(left_ms)
    interval = door.priority.hold_seconds[EMAIL]
    return error_response(
        429,
        "resend_too_soon",
        headers={
            "Retry-After": str(retry_after),
            "RateLimit-Policy": f"{RESEND_POLICY_NAME};q=1;w={interval}",
            "RateLimit": f"{RESEND_POLICY_NAME};r=0;t={retry_after}",
        },
    )
