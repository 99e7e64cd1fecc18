"""POST /v1/registrations served by the door's server without the application's
routing and middleware: the one request a wave is made of.

aiohttp hands every request to `Application._handle`, which resolves the route,
wraps the handler in the middleware chain (the metrics middleware and aiohttp's
own current-app fix-up) and awaits it through each layer. A registration needs
none of it: its path and method are known, and it is timed here as the
middleware would time it. Every other request (any other path or method, a
query string, an `Expect` header) goes to the application as before, so its
answers (404, 405 with Allow, 100-continue) stay the application's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import hdrs, web

from intake.door import Door
from intake.metrics import RequestTimer
from intake.registrations import register
from intake.responses import error_response

log = logging.getLogger(__name__)

# The route's name in the metrics, as the application names it (intake/app.py).
ROUTE: Final = "registrations.create"
PATH: Final = "/v1/registrations"

ServerHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def registrations_first(door: Door, application: ServerHandler) -> ServerHandler:
    """The server's request handler: registrations straight to `register`, the rest
    to `application` (the application's own `_handle`)."""
    timer = RequestTimer()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        # raw_path: the exact bytes, so an encoded or query-carrying path takes
        # the application's way, and matches there as it always did.
        if (request.method != hdrs.METH_POST or request.raw_path != PATH
                or hdrs.EXPECT in request.headers):
            return await application(request)
        started = time.perf_counter()
        try:
            response = await register(door, request)
        except Exception as exc:
            response = internal_error(exc, request.method, ROUTE)
        timer.observe(ROUTE, response.status, time.perf_counter() - started)
        return response

    return handle


def internal_error(exc: Exception, method: str, route: str | None) -> web.Response:
    """The 500 answer to an unexpected exception, logged by its type only
    (its message could quote request data)."""
    log.error("unhandled %s in %s %s", type(exc).__name__, method, route)
    return error_response(500, "internal_error")


def serve_registrations_first(server: web.Server, door: Door) -> None:
    """Make a started runner's server take the hot path; connections opened after
    this call use it (call it before the site listens, or before any client)."""
    server.request_handler = registrations_first(door, server.request_handler)
