"""A scripted door for the form's waiting room tests: answers set per request, calls kept."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo

from aiohttp import web

from tests.web.browser import WAIT_MS

KEY_SHAPE: Final = re.compile(r"[0-9a-f]{32}")
JAKARTA: Final = ZoneInfo("Asia/Jakarta")
ELSEWHERE: Final = "America/Sao_Paulo"  # ten hours from WIB: a time in it cannot pass for WIB
REGISTRATION_ID: Final = str(uuid.UUID(int=0x0123456789ABCDEF0123456789ABCDEF))
EARLIER_ID: Final = str(uuid.UUID(int=0xFEDCBA9876543210FEDCBA9876543210))
# Opaque to the page; shaped as the contract's q1.<key id>.<payload>.<mac>.
FIRST: Final = "q1.k1.Zmlyc3Q.bWFjMQ"
SECOND: Final = "q1.k1.c2Vjb25k.bWFjMg"
PERSONAL: Final = ("nik", "full_name", "email", "phone", "birth_date")
# How late a timer may fire on a loaded 2-core machine, on top of its bound.
SLACK_S: Final = 1.0


@dataclass(frozen=True)
class Answer:
    """One scripted answer, named for the record."""

    name: str
    respond: Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Call:
    """What the door saw of one request (monotonic arrival, the body's SHA-256)."""

    method: str
    answer: str
    auth: str
    ticket: str
    key: str
    body: str
    at: float


def ticket(token: str, state: str = "waiting", *, position: int = 1234, ahead: int = 1180,
           eta: tuple[int, int] = (40, 62), poll_after: float = 1,
           opens_at: str | None = None, turn_valid_until: str | None = None,
           registration_id: str | None = None) -> dict[str, Any]:
    """The contract's ticket object."""
    placed = state != "prequeue"
    return {
        "ticket": token, "ticket_id": "3f" * 16, "wave": "gelombang-1", "state": state,
        "position": position if placed else None, "ahead": ahead if placed else None,
        "eta_seconds": ({"p50": eta[0], "p90": eta[1]}
                        if state in ("prequeue", "waiting") else None),
        "opens_at": opens_at, "turn_valid_until": turn_valid_until,
        "registration_id": registration_id, "poll_after_seconds": poll_after,
        "status_url": f"/v1/queue/tickets/{token}",
    }


def answer(status: int, body: dict[str, Any] | None, name: str,
           headers: dict[str, str] | None = None) -> Answer:
    async def respond(request: web.Request) -> web.StreamResponse:
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return Answer(name, respond)


def refused(status: int, code: str, queue: dict[str, Any] | None = None,
            retry_after: int | None = None) -> Answer:
    """An error of the contract's shape, with the ticket object as `queue` when given."""
    body: dict[str, Any] = {"error": {"code": code, "message": code}}
    if queue is not None:
        body["queue"] = queue
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return answer(status, body, f"{status} {code}", headers)


def queued(queue: dict[str, Any]) -> Answer:
    """429 queued: its Retry-After is the ETA (40 s), which the page's polls do not wait."""
    return answer(429, {"error": {"code": "queued", "message": "queued"}, "queue": queue},
                  f"429 queued {queue['state']}",
                  {"Retry-After": "40", "Location": queue["status_url"]})


def polled(queue: dict[str, Any]) -> Answer:
    return answer(200, queue, f"200 {queue['state']}")


async def _drop(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.abort()
    return web.Response()


ACCEPT: Final = answer(202, {"registration_id": REGISTRATION_ID}, "202")
DROP: Final = Answer("dropped", _drop)


@dataclass
class ScriptedDoor:
    """The real form page; POSTs and polls answered from their scripts in order."""

    url: str = ""
    posts: list[Answer] = field(default_factory=lambda: [ACCEPT])
    polls: list[Answer] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def _answer(self, request: web.Request, script: list[Answer]) -> web.StreamResponse:
        reply = script.pop(0) if len(script) > 1 else script[0]
        self.calls.append(Call(
            request.method, reply.name, request.headers.get("Authorization", ""),
            request.match_info.get("ticket", ""), request.headers.get("Idempotency-Key", ""),
            hashlib.sha256(await request.read()).hexdigest(), time.monotonic()))
        self._changed.set()
        return await reply.respond(request)

    async def register(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, self.posts)

    async def poll(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, self.polls)

    async def leave(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, [answer(204, None, "204")])

    async def status(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/registrations/{id}: stored and verified, so the page stops polling."""
        return web.json_response({
            "registration_id": request.match_info["id"], "state": "accepted",
            "email_verification": "verified", "nik_verification": "verified",
            "updated_at": "2026-11-22T03:04:05Z"})

    def of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    async def seen(self, ready: Callable[[ScriptedDoor], bool]) -> None:
        """Waits until `ready(self)`, woken by each request."""
        async with asyncio.timeout(WAIT_MS / 1000):
            while not ready(self):
                self._changed.clear()
                await self._changed.wait()
