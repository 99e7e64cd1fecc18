"""The public port's connections: a plain registration answered without aiohttp's request objects.

A wave is made of one request: a whole `POST /v1/registrations` with a JSON
body, in one read. For it aiohttp would build a parsed message, a header
multidict, a payload stream, a request, a writer, a response, a task per
request and the connection loop's wake-ups, about a third of the door's CPU
per registration. `RegistrationLane` is aiohttp's connection handler with one
lane in front: when the connection is between requests and a read holds
exactly one plain registration (intake/request_head.py says which), the lane
decides it (`registrations.decide`, the same path as aiohttp's way) and
writes the answer's bytes itself. Every other read goes to aiohttp untouched,
which answers as it always did (other routes, refusals of malformed HTTP, a
body in several reads, chunked bodies, `Expect`, pipelined requests).

Order is kept: while the lane answers, what arrives waits, and goes on once
the answer is written; the lane takes a read only when aiohttp has answered
every request it was given (counted by their framing) and holds no partial
one. Shutdown is aiohttp's: a lane answer is a request in progress, which
the server waits for before closing the connection.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE

from intake.door import Door
from intake.hot_path import ROUTE, internal_error
from intake.http_errors import ContractRequestHandler
from intake.metrics import RequestTimer
from intake.registrations import (
    MAX_BODY_BYTES,
    NOT_ADMITTED,
    accepted_body,
    answer,
    decide,
    not_admitted,
    spend_token_of,
)
from intake.request_head import RegistrationRequest, framed_requests, registration_request
from queueing.admission import Outcome
from queueing.ids import format_uuid

# A client that sends on while its answer is being decided is not read past this.
HELD_BYTES_MAX: Final = 64 * 1024
# Bytes of a request aiohttp is reading that are kept to find its end; past this
# the connection stays aiohttp's.
FRAMED_BYTES_MAX: Final = 64 * 1024
_SERVER: Final = SERVER_SOFTWARE.encode()
_ACCEPTED: Final = (b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json; charset=utf-8\r\n"
                    b"Location: /v1/registrations/%s\r\nContent-Length: %d\r\nDate: %s\r\n"
                    b"Server: %s\r\n%s\r\n%s")
_CLOSE: Final = b"Connection: close\r\n"
_TIMER: Final = RequestTimer()


class RegistrationLane(ContractRequestHandler):
    """The public port's connection handler (see the module's doc)."""

    __slots__ = (
        "_aiohttp_only",
        "_answering",
        "_door",
        "_head_max",
        "_held",
        "_owed",
        "_reading_held",
        "_remote",
        "_unframed",
    )

    def __init__(self, manager: web.Server, door: Door, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._door = door
        # aiohttp's own limits on a header line bound the head the lane reads.
        self._head_max = min(self.max_line_size, self.max_field_size)
        self._remote: str | None = None
        self._answering: asyncio.Task[None] | None = None
        self._held = bytearray()
        self._reading_held = False
        # Requests given to aiohttp and not answered yet, and the bytes of one it
        # has only in part.
        self._owed = 0
        self._unframed = bytearray()
        # Set when aiohttp's reading cannot be followed (chunked, an upgrade, a
        # closing answer): the connection is aiohttp's from then on.
        self._aiohttp_only = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        # As aiohttp's request.remote reads it.
        if isinstance(peer, (list, tuple)):
            self._remote = str(peer[0])
        elif peer is not None:
            self._remote = str(peer)

    def data_received(self, data: bytes) -> None:
        """Answer a plain registration in the lane; give anything else to aiohttp."""
        if self._force_close or self._close:
            return  # as aiohttp: a closing connection reads nothing more
        if self._answering is not None:
            self._hold(data)
            return
        if self._between_requests():
            request = registration_request(data, self._head_max, self.max_headers,
                                           MAX_BODY_BYTES)
            if request is not None:
                self._answering = self._loop.create_task(self._answer(request))
                return
        self._to_aiohttp(data)

    def _between_requests(self) -> bool:
        return not self._aiohttp_only and self._owed == 0 and not self._unframed

    def _to_aiohttp(self, data: bytes) -> None:
        if not self._aiohttp_only:
            self._unframed += data
            framing = framed_requests(self._unframed)
            if not framing.known or len(self._unframed) - framing.used > FRAMED_BYTES_MAX:
                self._aiohttp_only = True
                self._unframed.clear()
            else:
                self._owed += framing.whole
                del self._unframed[:framing.used]
        super().data_received(data)

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        """aiohttp's answer written: one request fewer owed (a closing one ends the lane)."""
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._owed -= 1
            if self._owed < 0 or not resp.keep_alive:
                self._aiohttp_only = True

    def _hold(self, data: bytes) -> None:
        self._held += data
        if len(self._held) > HELD_BYTES_MAX and not self._reading_held and self.transport:
            self.transport.pause_reading()
            self._reading_held = True

    async def _answer(self, request: RegistrationRequest) -> None:
        started = time.perf_counter()
        self._request_in_progress = True  # the server's shutdown waits for it
        self._push_idle_close()
        try:
            status, data, closes = await self._answer_bytes(request)
            _TIMER.observe(ROUTE, status, time.perf_counter() - started)
            self._send(data, closes)
            if self._held and self._paused:
                # The client sends on but does not read its answers: wait until it
                # does before reading what it sent (still answering, so in order).
                try:
                    await self._drain_helper()
                except ConnectionError:
                    self._held.clear()
        finally:
            self._request_in_progress = False
            self._answering = None
            waiter = self._handler_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._read_held()

    async def _answer_bytes(self, request: RegistrationRequest) -> tuple[int, bytes, bool]:
        """The answer's status and bytes, and whether the connection closes after it."""
        door = self._door
        try:
            try:
                if door.client_limiter is not None:
                    spend_token_of(door.client_limiter, self._remote, request.forwarded_for)
                decision = await decide(door, request.body, request.idempotency_key,
                                        request.authorization)
            except NOT_ADMITTED as exc:
                response = not_admitted(exc)
            else:
                # Whether the connection closes is known once decided: a shutdown
                # may have begun meanwhile.
                closes = self._closes(request)
                if decision.outcome is Outcome.ADMITTED or decision.outcome is Outcome.REPLAYED:
                    assert decision.registration_id is not None
                    return 202, accepted_bytes(format_uuid(decision.registration_id),
                                               closes), closes
                response = answer(door, decision)
        except Exception as exc:
            response = internal_error(exc, "POST", ROUTE)
        closes = self._closes(request) or response.keep_alive is False
        return response.status, response_bytes(response, closes), closes

    def _closes(self, request: RegistrationRequest) -> bool:
        return request.closes or self._close or self._force_close

    def _send(self, data: bytes, closes: bool) -> None:
        transport = self.transport
        if transport is None:
            return  # the client left; what was decided stands
        transport.write(data)
        if closes:
            self.force_close()
        else:
            self._push_idle_close()

    def _push_idle_close(self) -> None:
        # aiohttp's idle timeout, armed as its own loop arms it after an answer.
        timeout = self._keepalive_timeout
        if timeout <= 0:
            return
        close_time = self._loop.time() + timeout
        self._next_keepalive_close_time = close_time
        if self._keepalive_handle is None:
            self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)

    def _read_held(self) -> None:
        """Read on what arrived while the lane answered, now its answer is out."""
        if not self._held:
            return
        held = bytes(self._held)
        self._held.clear()
        if self._reading_held and self.transport is not None:
            self._reading_held = False
            self.transport.resume_reading()
        self.data_received(held)


def accepted_bytes(registration_id: str, closes: bool) -> bytes:
    """The whole 202 for an admitted (or replayed) registration, as aiohttp would write it."""
    body = accepted_body(registration_id)
    return _ACCEPTED % (registration_id.encode(), len(body), rfc822_formatted_time().encode(),
                        _SERVER, _CLOSE if closes else b"", body)


def response_bytes(response: web.Response, closes: bool) -> bytes:
    """A prepared-in-memory response's bytes: its status, headers and body, with the
    Content-Length, Date and Server that aiohttp adds."""
    body = response.body
    assert isinstance(body, bytes)
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    lines.append(f"Date: {rfc822_formatted_time()}")
    lines.append(f"Server: {SERVER_SOFTWARE}")
    if closes:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
