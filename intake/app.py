"""The aiohttp applications of a door process: the public port and the admin port."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from intake import health, registrations, resend, verify_email
from intake.admin import build_admin_routes, require_token
from intake.door import Door
from intake.hot_path import internal_error
from intake.metrics import RequestTimer
from intake.pages import add_page_routes, form_page, ops_page
from intake.queue_routes import add_queue_routes
from intake.responses import error_response
from intake.state import DOOR
from intake.wave_routes import build_wave_routes

LINGER_SECONDS = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _observing(timer: RequestTimer) -> Middleware:
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Time every request, and keep every error in the contract's JSON shape."""
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPMethodNotAllowed as exc:
            # aiohttp's own 405 comes as text; RFC 9110 requires its Allow header, which
            # lists the path's methods (HEAD only where a route allows it).
            response = error_response(405, "method_not_allowed",
                                      headers={"Allow": ", ".join(sorted(exc.allowed_methods))})
        except web.HTTPException as exc:
            # aiohttp's own 404 comes as text: answer in the contract's shape.
            response = error_response(404, "not_found") if exc.status == 404 else exc
        except Exception as exc:
            response = internal_error(exc, request.method, request.match_info.route.name)
        route = request.match_info.route.name or "unmatched"
        timer.observe(route, response.status, time.perf_counter() - started)
        return response

    return observe


def build_public_app(door: Door) -> web.Application:
    """The public port: registrations, health and the OpenAPI document."""
    public = door.settings.public
    app = web.Application(
        middlewares=[_observing(RequestTimer())],
        client_max_size=registrations.MAX_BODY_BYTES,
        handler_args={
            # aiohttp arms this when a connection opens and after each answer, and
            # closes the connection if no complete request head came by then: it is
            # the idle and the slow-header timeout at once.
            "keepalive_timeout": public.idle_timeout_seconds,
            "max_line_size": public.max_header_bytes,
            "max_field_size": public.max_header_bytes,
            "max_headers": public.max_headers,
            # After a 408 or 413 the unread rest of a body is drained for this long
            # (so the client sees the answer, not a reset), then the connection closes;
            # aiohttp's 10 s would let a slow client hold it that much longer.
            "lingering_time": LINGER_SECONDS,
        },
    )
    app[DOOR] = door
    router = app.router
    router.add_post("/v1/registrations", registrations.create_registration,
                    name="registrations.create")
    router.add_get("/v1/registrations/{registration_id}", registrations.read_registration,
                   name="registrations.read", allow_head=False)
    router.add_post("/v1/registrations/{registration_id}/verification-email",
                    resend.resend_verification_email, name="registrations.resend_email")
    router.add_get("/v1/verify-email", verify_email.verify_email, name="verify_email",
                   allow_head=False)
    router.add_get("/healthz", health.healthz, name="healthz", allow_head=False)
    router.add_get("/readyz", health.readyz, name="readyz", allow_head=False)
    router.add_get("/openapi.json", health.openapi, name="openapi", allow_head=False)
    add_queue_routes(router)
    build_wave_routes(app)
    # Exact and prefix routes of their own: POST /v1/registrations resolves as fast as before.
    add_page_routes(router, form_page(), prefix="/", name="form")
    return app


def build_admin_app(door: Door) -> web.Application:
    """The admin port: metrics and admission settings."""
    app = web.Application(middlewares=[_observing(RequestTimer()), require_token],
                          client_max_size=64 * 1024)
    app[DOOR] = door
    build_admin_routes(app)
    add_page_routes(app.router, ops_page(), prefix="/admin/", name="ops")
    return app
