"""`gelombang nik-sim`: a stand-in for the ministry's (Dukcapil-style) NIK verification API.

It answers like the real one under load: a hard per-second capacity (429),
outages (503), random failures (500) and log-normal latency, against a
deterministic synthetic population (workers.sandbox.population). Admin
endpoints on the same port switch these live and report what was received;
they are for dev and tests only and carry no authentication.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import datetime
import hmac
import logging
import math
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import uvloop
from aiohttp import hdrs, web

from config.log_format import configure_logging
from config.settings import NikSimulatorSettings, Settings
from workers.sandbox.population import names_match, record_for

log = logging.getLogger("gelombang.nik_sim")

VERIFY_PATH: Final = "/api/v1/nik/verify"
# ln(p99 / median) / sigma: the standard normal's 99th percentile.
Z_P99: Final = 2.3263
# A latency draw is capped at this many p99s, so one freak draw cannot outlast
# every client's timeout.
LATENCY_CAP_P99S: Final = 10.0
# Seconds of per-second counts kept for /admin/stats (an hour).
PER_SECOND_KEPT: Final = 3600
# After SIGTERM, requests in hand get this long to be answered, and as long
# again once cancelled: aiohttp waits twice (3.14), so the stop takes at most ~3 s.
SHUTDOWN_GRACE_SECONDS: Final = 1.5
MAX_BODY_BYTES: Final = 16 * 1024
_ISO_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# The figures PUT /admin/settings may change.
LIVE_FIGURES: Final = ("capacity_per_second", "error_rate", "latency_ms_median", "latency_ms_p99")


@dataclass
class Simulator:
    """The simulator's live figures and counters, one per application."""

    settings: NikSimulatorSettings
    username: str
    password: str = field(repr=False)
    clock: Callable[[], float] = time.time
    outage: bool = False
    rng: random.Random = field(init=False)
    received: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    per_second: dict[int, int] = field(default_factory=dict)
    max_per_second: int = 0
    # Answers given for a NIK that had been answered before: a verifier that
    # asks twice wastes the ministry's capacity (fault drills count these).
    # Python's salted hash, not the NIK: the simulator keeps no list of them.
    answered: set[int] = field(default_factory=set)
    answered_again: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    # The calendar second being admitted, and how many were admitted in it.
    window_second: int = -1
    window_admitted: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.settings.population_seed)

    def count_received(self) -> int:
        """Count one request in its unix second; return that second."""
        second = int(self.clock())
        self.received += 1
        count = self.per_second.get(second, 0) + 1
        self.per_second[second] = count
        self.max_per_second = max(self.max_per_second, count)
        while len(self.per_second) > PER_SECOND_KEPT:
            del self.per_second[next(iter(self.per_second))]
        return second

    def count_answer(self, nik: str) -> None:
        """Note that this NIK got an answer, counting repeats."""
        key = hash(nik)
        if key in self.answered:
            self.answered_again += 1
        else:
            self.answered.add(key)

    def admit(self, second: int) -> bool:
        """Whether the second's capacity has room for one more request."""
        if second != self.window_second:
            self.window_second, self.window_admitted = second, 0
        # A calendar window admits whole requests: at least one a second.
        if self.window_admitted >= max(1, int(self.settings.capacity_per_second)):
            return False
        self.window_admitted += 1
        return True

    def authorised(self, header: str | None) -> bool:
        """Whether an Authorization header carries the configured credentials."""
        credentials = basic_credentials(header or "")
        if credentials is None:
            return False
        login, password = credentials
        if not hmac.compare_digest(login.encode(), self.username.encode()):
            return False
        # No configured password: any password is accepted for the username.
        return not self.password or hmac.compare_digest(
            password.encode(), self.password.encode()
        )

    def latency_seconds(self) -> float:
        """A log-normal draw with the configured median and p99."""
        median = self.settings.latency_ms_median
        if median <= 0:
            return 0.0
        p99 = self.settings.latency_ms_p99
        sigma = max(0.0, math.log(p99 / median) / Z_P99) if p99 > 0 else 0.0
        draw = self.rng.lognormvariate(math.log(median), sigma)
        return min(draw, LATENCY_CAP_P99S * max(p99, median)) / 1000

    def reset(self) -> None:
        """Zero every counter and the current second's admissions."""
        self.received = 0
        self.statuses.clear()
        self.results.clear()
        self.per_second.clear()
        self.max_per_second = 0
        self.answered.clear()
        self.answered_again = 0
        self.max_in_flight = self.in_flight
        self.window_second, self.window_admitted = -1, 0

    def live_figures(self) -> dict[str, float]:
        """The figures PUT /admin/settings may change, as they are now."""
        return {name: getattr(self.settings, name) for name in LIVE_FIGURES}

    def stats(self) -> dict[str, Any]:
        """The body of GET /admin/stats."""
        return {
            "received": self.received,
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
            "results": dict(self.results),
            "per_second": {str(second): n for second, n in self.per_second.items()},
            "max_per_second": self.max_per_second,
            "max_in_flight": self.max_in_flight,
            "answered_again": self.answered_again,
            "outage": self.outage,
        }


def basic_credentials(header: str) -> tuple[str, str] | None:
    """Login and password of a `Basic` Authorization header (RFC 7617), None if malformed."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        decoded = raw.decode("latin-1")  # what older clients send
    login, colon, password = decoded.partition(":")
    return (login, password) if colon else None


SIMULATOR: Final = web.AppKey("nik_simulator", Simulator)


def _error(status: int, code: str, retry_after: int | None = None) -> web.Response:
    headers = {hdrs.RETRY_AFTER: str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": code}, status=status, headers=headers)


class BadRequest(Exception):
    """The request body is not the JSON the endpoint expects."""


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest from None
    if not isinstance(body, dict):
        raise BadRequest
    return body


def _verify_fields(body: dict[str, Any]) -> tuple[str, str, datetime.date]:
    nik, name, born = body.get("nik"), body.get("full_name"), body.get("birth_date")
    if not (isinstance(nik, str) and isinstance(name, str) and isinstance(born, str)):
        raise BadRequest
    if _ISO_DATE.fullmatch(born) is None:
        raise BadRequest
    try:
        return nik, name, datetime.date.fromisoformat(born)
    except ValueError:
        raise BadRequest from None


def _result(sim: Simulator, nik: str, name: str, born: datetime.date) -> str:
    record = record_for(nik, sim.settings.population_seed, sim.settings.existing_share)
    if record is None:
        return "not_found"
    if not names_match(record.full_name, name):
        return "name_mismatch"
    if record.birth_date != born:
        return "birth_date_mismatch"
    return "match"


async def _answer(sim: Simulator, request: web.Request) -> web.Response:
    second = sim.count_received()
    if sim.outage:
        return _error(503, "outage", retry_after=5)
    if not sim.admit(second):
        return _error(429, "rate_limited", retry_after=1)
    if not sim.authorised(request.headers.get(hdrs.AUTHORIZATION)):
        return _error(401, "unauthorized")
    try:
        nik, name, born = _verify_fields(await _json_object(request))
    except BadRequest:
        return _error(400, "bad_request")
    if sim.rng.random() < sim.settings.error_rate:
        return _error(500, "internal")
    delay = sim.latency_seconds()
    if delay > 0:
        await asyncio.sleep(delay)
    result = _result(sim, nik, name, born)
    sim.results[result] += 1
    sim.count_answer(nik)
    return web.json_response({"result": result})


async def verify(request: web.Request) -> web.Response:
    """POST /api/v1/nik/verify: does the NIK exist, and do name and birth date match?"""
    sim = request.app[SIMULATOR]
    sim.in_flight += 1
    sim.max_in_flight = max(sim.max_in_flight, sim.in_flight)
    try:
        response = await _answer(sim, request)
    finally:
        sim.in_flight -= 1
    sim.statuses[response.status] += 1
    return response


async def put_outage(request: web.Request) -> web.Response:
    """PUT /admin/outage {"on": bool}: every verify call answers 503 while on."""
    sim = request.app[SIMULATOR]
    try:
        body = await _json_object(request)
    except BadRequest:
        return _error(400, "bad_request")
    if not isinstance(body.get("on"), bool):
        return _error(422, "invalid_value")
    sim.outage = body["on"]
    return web.json_response({"outage": sim.outage})


def _checked_figures(body: dict[str, Any], current: dict[str, float]) -> dict[str, float] | None:
    """The figures after the change, or None when a value is out of range or unknown."""
    figures = dict(current)
    for name, value in body.items():
        # bool is an int to Python, not a figure to anyone else.
        if name not in figures or isinstance(value, bool) or not isinstance(value, int | float):
            return None
        figures[name] = float(value)
    if not (
        figures["capacity_per_second"] > 0
        and 0 <= figures["error_rate"] <= 1
        and 0 <= figures["latency_ms_median"] <= figures["latency_ms_p99"]
        and all(math.isfinite(value) for value in figures.values())
    ):
        return None
    return figures


async def put_settings(request: web.Request) -> web.Response:
    """PUT /admin/settings: change capacity, error rate or latency, live."""
    sim = request.app[SIMULATOR]
    try:
        body = await _json_object(request)
    except BadRequest:
        return _error(400, "bad_request")
    figures = _checked_figures(body, sim.live_figures())
    if figures is None:
        return _error(422, "invalid_value")
    sim.settings = sim.settings.model_copy(update=figures)
    return web.json_response(sim.live_figures())


async def post_reset(request: web.Request) -> web.Response:
    """POST /admin/reset: zero the counters."""
    sim = request.app[SIMULATOR]
    sim.reset()
    return web.json_response(sim.stats())


async def get_stats(request: web.Request) -> web.Response:
    """GET /admin/stats: what the verify endpoint received and answered."""
    return web.json_response(request.app[SIMULATOR].stats())


def build_app(
    settings: NikSimulatorSettings,
    username: str,
    password: str,
    *,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The simulator's application: the verify endpoint and the admin endpoints."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SIMULATOR] = Simulator(settings, username, password, clock)
    app.router.add_post(VERIFY_PATH, verify)
    app.router.add_put("/admin/outage", put_outage)
    app.router.add_put("/admin/settings", put_settings)
    app.router.add_post("/admin/reset", post_reset)
    app.router.add_get("/admin/stats", get_stats, allow_head=False)
    return app


def register(subparsers: Any) -> None:
    """Add the `nik-sim` subcommand."""
    parser = subparsers.add_parser("nik-sim", help="run the ministry NIK API simulator (dev/test)")
    parser.add_argument("--host", default=None, help="listen address (default: nik_sim.host)")
    parser.add_argument("--port", type=int, default=None, help="default: nik_sim.port")
    parser.add_argument("--capacity", type=float, default=None,
                        help="requests admitted per second (default: nik_sim.capacity_per_second)")
    parser.add_argument("--error-rate", type=float, default=None,
                        help="share of requests answered 500 (default: nik_sim.error_rate)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of `gelombang nik-sim`: serve until SIGTERM or SIGINT."""
    given = {"host": args.host, "port": args.port, "capacity_per_second": args.capacity,
             "error_rate": args.error_rate}
    overrides = {name: value for name, value in given.items() if value is not None}
    settings = Settings.load(nik_sim=overrides) if overrides else Settings.load()
    configure_logging(settings, "nik-sim")
    uvloop.run(serve(settings))
    return 0


async def serve(settings: Settings) -> None:
    """Run the simulator until SIGTERM or SIGINT, then close within seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sim = settings.nik_sim
    app = build_app(sim, settings.nik.username, settings.nik.password)
    # No access log: the simulator logs nothing about requests.
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
    await runner.setup()
    try:
        await web.TCPSite(runner, sim.host, sim.port).start()
        # The bound port, which differs from the configured one when that is 0.
        port = runner.addresses[0][1] if runner.addresses else sim.port
        log.info("nik simulator listening on %s:%d", sim.host, port)
        await stop.wait()
        log.info("nik simulator stopping")
    finally:
        await runner.cleanup()
    log.info("nik simulator stopped")
