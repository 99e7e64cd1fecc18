"""`gelombang status`: a live terminal view of admission, queue, drain, verification, funnel.

It reads the admin port only (see gelombang/status_sample.py), so it needs the
admin URL and token of the config, nothing else. Ctrl-C or SIGTERM ends it at
once, with the terminal restored; `--once` prints one frame (its rates over a
short window) and exits, for scripts and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
import uvloop
from rich.console import Console
from rich.live import Live

from config.settings import Settings
from gelombang.status_fleet import FleetRates
from gelombang.status_sample import (
    Frame,
    Reading,
    Verification,
    make_frame,
    read_admin,
    with_processes,
)
from gelombang.status_view import render_frame

# Every funnel read is an audited admin action: one every few seconds, not every frame.
FUNNEL_EVERY_SECONDS: Final = 5.0
REQUEST_TIMEOUT_SECONDS: Final = 5.0


def register(subparsers: Any) -> None:
    """Add the `status` subcommand."""
    parser = subparsers.add_parser("status", help="live view of admission, queue and funnel")
    parser.add_argument("--url", help="admin base URL (default: from admin.host and admin.port)")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between frames (default 2)")
    parser.add_argument("--once", action="store_true",
                        help="print one frame and exit (rates over --window seconds)")
    # Longer than a door's report period (2 s), so each process reports in between.
    parser.add_argument("--window", type=float, default=3.0,
                        help="with --once: seconds between the two readings (default 3)")
    parser.set_defaults(handler=run)


def _heading(url: str) -> str:
    return f"Gelombang status · {url} · {datetime.datetime.now():%Y-%m-%d %H:%M:%S}"


async def _until_signal(view: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    # The handlers only set the event; the view notices at its next wait and leaves cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return await view(stop)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS))


async def show_once(url: str, token: str, window: float, console: Console,
                    stop: asyncio.Event) -> int:
    """Two readings `window` apart, one frame printed; 1 when the admin port fails."""
    fleet = FleetRates()
    async with _session() as session:
        try:
            first = await read_admin(session, url, token, with_funnel=True)
            fleet.update(first.processes or [])
            await _wait(stop, window)
            second = await read_admin(session, url, token, with_funnel=True)
        except (aiohttp.ClientError, TimeoutError) as exc:
            print(f"gelombang status: admin port at {url}: {exc}", file=sys.stderr)
            return 1
    frame = with_processes(make_frame(second, first, first), fleet.update(second.processes or []))
    console.print(render_frame(frame, _heading(url)))
    return 0


class _Follower:
    """The live view's memory between frames: last readings, last funnel, last frame."""

    def __init__(self) -> None:
        self.before: Reading | None = None
        self.funnel_before: Reading | None = None
        self.drained: float | None = None
        self.verification: Verification | None = None
        self.fleet = FleetRates()
        self.frame = Frame({}, {}, {}, None)

    def wants_funnel(self, now: float) -> bool:
        return self.funnel_before is None or now - self.funnel_before.at >= FUNNEL_EVERY_SECONDS

    def advance(self, reading: Reading) -> Frame:
        frame = make_frame(reading, self.before,
                           self.funnel_before if reading.funnel is not None else None)
        frame = with_processes(frame, self.fleet.update(reading.processes or []))
        self.before = reading
        if reading.funnel is not None:
            self.funnel_before = reading
            self.drained = frame.drained_per_second if frame.drained_per_second is not None \
                else self.drained
            self.verification = frame.verification or self.verification
        funnel = self.funnel_before.funnel if self.funnel_before is not None else None
        self.frame = dataclasses.replace(frame, funnel=funnel, drained_per_second=self.drained,
                                         verification=self.verification)
        return self.frame


async def follow(url: str, token: str, interval: float, console: Console,
                 stop: asyncio.Event) -> int:
    """Redraw every `interval` seconds until `stop` is set (Ctrl-C, SIGTERM)."""
    state = _Follower()
    async with _session() as session:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while not stop.is_set():
                try:
                    reading = await read_admin(session, url, token,
                                               with_funnel=state.wants_funnel(time.monotonic()))
                    frame = state.advance(reading)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    # Keep the last figures on screen and say why they are not moving.
                    frame = dataclasses.replace(state.frame,
                                                problems=[f"admin port: {exc}"])
                live.update(render_frame(frame, _heading(url)), refresh=True)
                await _wait(stop, interval)
    return 0


def run(args: argparse.Namespace) -> int:
    """Handler of `gelombang status`."""
    settings = Settings.load()
    url = (args.url or settings.admin.local_url).rstrip("/")
    console = Console()
    token = settings.admin.token
    if args.once:
        return uvloop.run(_until_signal(
            lambda stop: show_once(url, token, args.window, console, stop)))
    return uvloop.run(_until_signal(
        lambda stop: follow(url, token, args.interval, console, stop)))
