"""A scripted door and a client for the waiting room applicant's tests."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from loadtest.recorder import Recorder

BODY = b'{"form": "placeholder"}'
KEY = "0123456789ab-1f"
Handler = Callable[["Seen", "ScriptedDoor"], Awaitable[web.Response]]


@dataclass(frozen=True)
class Seen:
    """One request the door received."""

    method: str
    path: str
    key: str | None
    authorization: str | None
    body: bytes


@dataclass
class ScriptedDoor:
    """An aiohttp server on a thread of its own; `handler` decides every answer."""

    handler: Handler
    seen: list[Seen] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ScriptedDoor:
        self._thread.start()
        assert self._ready.wait(10), "the scripted door did not start"
        return self

    def __exit__(self, *_: object) -> None:
        stop = self._stop
        assert stop is not None
        self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        seen = Seen(request.method, request.path_qs, request.headers.get("Idempotency-Key"),
                    request.headers.get("Authorization"), await request.read())
        self.seen.append(seen)
        return await self.handler(seen, self)

    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]


class Reply:
    """What Locust's FastResponse offers the applicant, over http.client."""

    def __init__(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, body
        self.failed: str | None = None

    def __enter__(self) -> Reply:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def json(self) -> Any:
        return json.loads(self.content)

    def success(self) -> None:
        self.failed = None

    def failure(self, why: str) -> None:
        self.failed = why


@dataclass
class Client:
    """The part of Locust's FastHttpSession the applicant uses."""

    port: int
    failures: list[str] = field(default_factory=list)

    def post(self, path: str, *, data: bytes, headers: dict[str, str], name: str,
             catch_response: bool) -> Reply:
        return self._request("POST", path, data, headers)

    def get(self, path: str, *, headers: dict[str, str], name: str,
            catch_response: bool) -> Reply:
        return self._request("GET", path, None, headers)

    def _request(self, method: str, path: str, data: bytes | None,
                 headers: dict[str, str]) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request(method, path, body=data, headers=headers)
            answer = connection.getresponse()
            reply = Reply(answer.status, CIMultiDict(answer.getheaders()), answer.read())
        except OSError:
            reply = Reply(0, CIMultiDict(), b"")
        finally:
            connection.close()
        return _Noted(reply, self.failures)


class _Noted(Reply):
    """A reply whose failure, if any, the client keeps when the applicant is done with it."""

    def __init__(self, reply: Reply, failures: list[str]) -> None:
        super().__init__(reply.status_code, reply.headers, reply.content)
        self._failures = failures

    def __exit__(self, *_: object) -> None:
        if self.failed is not None:
            self._failures.append(self.failed)


def ticket(token: str, state: str = "waiting", position: int | None = 7,
           eta: tuple[float, float] | None = (30.0, 45.0), poll_after: float = 20.0,
           registration_id: str | None = None) -> dict[str, Any]:
    """A ticket object as docs/waiting-room.md spells it."""
    return {"ticket": token, "ticket_id": "3f0c" * 8, "wave": "crush-test", "state": state,
            "position": position, "ahead": None if position is None else position - 1,
            "eta_seconds": None if eta is None else {"p50": eta[0], "p90": eta[1]},
            "opens_at": None, "turn_valid_until": None, "registration_id": registration_id,
            "poll_after_seconds": poll_after, "status_url": f"/v1/queue/tickets/{token}"}


def queued(queue: dict[str, Any], status: int = 429, retry_after: int = 30) -> web.Response:
    code = "queued" if status == 429 else "backlog_full"
    return web.json_response({"error": {"code": code, "message": "in line"}, "queue": queue},
                             status=status, headers={"Retry-After": str(retry_after)})


@dataclass
class Run:
    """One applicant's run: the door's view, the waits, the records."""

    door: ScriptedDoor
    waits: list[float]
    recorder: Recorder
    failures: list[str]

    @property
    def journey(self) -> dict[str, Any]:
        assert len(self.recorder.journeys) == 1
        return self.recorder.journeys[0]
