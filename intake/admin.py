"""The admin port: metrics, and live admission settings behind a bearer token.

Every route but /metrics and the ops page's static files (OPEN_ROUTES: they
hold no data) needs the token, and every authenticated action is
audited (who, what, when, from where) on the audit stream before it is
answered: a change in the same Redis transaction as the change, a read just
before the read (an identical read again within `admin.read_audit_seconds`
is not audited again); a change refused for its content is audited with the
reason. When the entry cannot be written the action is refused (503).
Requests without the token are logged and not audited, so a client without
it cannot flood the audit trail (which Redis holds until it is archived).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Final

import orjson
from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from intake import metrics
from intake.audit_view import get_audit
from intake.errors import AdmissionChangeRefused
from intake.funnel import get_funnel
from intake.processes_view import get_processes
from intake.responses import error_response, json_response
from intake.state import DOOR
from queueing.admission import AdmissionPolicy
from queueing.audit import append_audit, append_read_audit
from queueing.breaker_reports import current_reports
from queueing.live_settings import FIELDS, read_policy, update_policy
from queueing.redis_client import REDIS_UNAVAILABLE
from queueing.redis_memory import memory
from queueing.waves import CANCEL_ACTION, SCHEDULE_ACTION

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The single admin identity a bearer token stands for, as the audit log names it.
ADMIN_ACTOR = "admin-token"
# Routes whose handler writes its own audit entry, in one transaction with the change.
SELF_AUDITED = frozenset({"admission.update", SCHEDULE_ACTION, CANCEL_ACTION})
# The action of an authenticated admission change refused for its content.
REFUSED_UPDATE = "admission.update.refused"
# Served without the token: Prometheus scrapes, and the ops page's document and assets,
# which hold no data (the page asks for the token and sends it with each API call).
OPEN_ROUTES = frozenset({"metrics", "ops.page", "ops.asset"})


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every admin route but /metrics and the ops page's files needs the bearer token."""
    if request.match_info.route.name in OPEN_ROUTES:
        return await handler(request)
    expected = request.app[DOOR].settings.admin.token
    supplied = request.headers.get("Authorization", "")
    scheme, _, token = supplied.partition(" ")
    # compare_digest: the time taken must not reveal how much of a guess matched.
    if not (
        expected
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip().encode(), expected.encode())
    ):
        # The path and address only: never the token that was offered.
        log.warning("admin request refused (no valid token): %s %s from %s",
                    request.method, request.path, request.remote or "unknown")
        return error_response(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
    action = request.match_info.route.name
    if action is not None and action not in SELF_AUDITED:
        door = request.app[DOOR]
        details = {"query": dict(request.query)} if request.query else {}
        try:
            async with asyncio.timeout(door.settings.redis.timeout_seconds):
                if request.method == "GET":
                    # A page that polls (the ops page's funnel, every 5 s) is one
                    # entry per window, not one per refresh; a new query or address
                    # is a new read, audited at once.
                    await append_read_audit(
                        door.redis, actor=ADMIN_ACTOR, source=_source(request),
                        action=action, details=details,
                        window_seconds=door.settings.admin.read_audit_seconds)
                else:
                    await append_audit(door.redis, actor=ADMIN_ACTOR, source=_source(request),
                                       action=action, details=details)
        except REDIS_UNAVAILABLE:
            return error_response(503, "queue_unavailable", headers={"Retry-After": "2"})
    return await handler(request)


def _source(request: web.Request) -> str:
    return request.remote or "unknown"


async def metrics_text(request: web.Request) -> web.Response:
    """Prometheus text for the whole process group."""
    door = request.app[DOOR]
    queues = metrics.QueueSnapshot()
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            queues = metrics.QueueSnapshot(await door.backlog(), await door.dead_letters(),
                                           await current_reports(door.redis),
                                           await memory(door.redis))
    except REDIS_UNAVAILABLE:
        pass  # scraped without the Redis-read gauges: the counters still tell
    line = door.admission.line
    if line is not None and line.view.fresh:
        queues = dataclasses.replace(queues, line=metrics.line_figures(line.view, line.rate()))
    body = metrics.render(queues, door.live.policy)
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


async def get_admission(request: web.Request) -> web.Response:
    """The admission settings in force for the whole deployment."""
    door = request.app[DOOR]
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            policy = await read_policy(door.redis, door.live.configured)
    except REDIS_UNAVAILABLE:
        return error_response(503, "queue_unavailable", headers={"Retry-After": "2"})
    return json_response(200, policy.model_dump())


async def put_admission(request: web.Request) -> web.Response:
    """Change some admission settings for every door process, and audit it."""
    if request.content_type != "application/json":
        return await _refuse(request, 415, "unsupported_media_type")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return await _refuse(request, 400, "malformed_json")
    try:
        changes = checked_admission_changes(body)
    except AdmissionChangeRefused as exc:
        return await _refuse(request, 422, "validation_failed", exc.fields)
    door = request.app[DOOR]
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            policy = await update_policy(
                door.redis, door.live.configured, changes,
                actor=ADMIN_ACTOR, source=_source(request),
            )
    except REDIS_UNAVAILABLE:
        return error_response(503, "queue_unavailable", headers={"Retry-After": "2"})
    door.live.apply(policy)
    return json_response(200, policy.model_dump())


async def _refuse(request: web.Request, status: int, code: str,
                  fields: Mapping[str, str] | None = None) -> web.Response:
    """Audit a refused change (why, never what was sent), then answer the refusal.

    The entry names the known fields and their problem codes; a field name
    the API does not know is the client's own text, so only counted.
    """
    door = request.app[DOOR]
    details: dict[str, Any] = {"status": status, "code": code}
    known = {name: problem for name, problem in (fields or {}).items()
             if name in FIELDS or name == "body"}
    if known:
        details["fields"] = known
    if fields is not None and len(fields) > len(known):
        details["unknown_fields"] = len(fields) - len(known)
    try:
        async with asyncio.timeout(door.settings.redis.timeout_seconds):
            await append_audit(door.redis, actor=ADMIN_ACTOR, source=_source(request),
                               action=REFUSED_UPDATE, details=details)
    except REDIS_UNAVAILABLE:
        # As for every admin action: no audit entry, no answer but 503.
        return error_response(503, "queue_unavailable", headers={"Retry-After": "2"})
    return error_response(status, code, fields=fields)


# Each bounded field's type with its bounds (Field(gt=…, ge=…) in config/settings.py).
_BOUNDED: Final[Mapping[str, TypeAdapter[Any]]] = {
    name: TypeAdapter(Annotated[(field.annotation, *field.metadata)])  # type: ignore[arg-type]
    for name, field in AdmissionPolicy.model_fields.items() if field.metadata
}


class _Wrong(Exception):
    """One field's problem code (`unknown_field`, `wrong_type`, `out_of_range`)."""


def _check(name: str, value: Any) -> Any:
    """The value as the policy's field holds it; raises _Wrong."""
    field = AdmissionPolicy.model_fields.get(name)
    if field is None:
        raise _Wrong("unknown_field")
    kind = field.annotation
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise _Wrong("wrong_type")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Wrong("wrong_type")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise _Wrong("wrong_type")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise _Wrong("out_of_range")
    bounded = _BOUNDED.get(name)
    try:
        # Of the right type by now: only the field's bounds can refuse it.
        return value if bounded is None else bounded.validate_python(value, strict=True)
    except ValidationError:
        raise _Wrong("out_of_range") from None


def checked_admission_changes(body: object) -> dict[str, Any]:
    """The checked values by field; raises AdmissionChangeRefused with every problem."""
    if not isinstance(body, dict):
        raise AdmissionChangeRefused({"body": "wrong_type"})
    changes: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name, value in body.items():
        try:
            changes[name] = _check(name, value)
        except _Wrong as exc:
            problems[name] = str(exc)
    if problems:
        raise AdmissionChangeRefused(problems)
    return changes


def build_admin_routes(app: web.Application) -> None:
    """Attach the admin routes to an app."""
    # The route names are the actions the audit trail records.
    app.router.add_get("/metrics", metrics_text, name="metrics", allow_head=False)
    app.router.add_get("/admin/v1/admission", get_admission, name="admission.read",
                       allow_head=False)
    app.router.add_put("/admin/v1/admission", put_admission, name="admission.update")
    app.router.add_get("/admin/v1/funnel", get_funnel, name="funnel.read", allow_head=False)
    app.router.add_get("/admin/v1/processes", get_processes, name="processes.read",
                       allow_head=False)
    app.router.add_get("/admin/v1/audit", get_audit, name="audit.read", allow_head=False)
    # Imported here: intake.waves_admin imports this module (ADMIN_ACTOR).
    from intake.waves_admin import build_wave_admin_routes
    build_wave_admin_routes(app)
