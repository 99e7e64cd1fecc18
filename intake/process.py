"""One door process: both ports on uvloop, and an ordered graceful shutdown."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import uvloop
from aiohttp import web

from config.log_format import configure_logging
from config.settings import ConfigError, Settings
from intake.app import build_admin_app, build_public_app
from intake.connections import CappedSite
from intake.door import Door, open_door
from intake.door_server import DoorRunner
from intake.http_errors import http_logger
from intake.key_reload import on_reload_signal
from queueing.redis_memory import EvictingRedis
from queueing.supervision import BackgroundTaskFailed

log = logging.getLogger("gelombang.door")
ADMIN_MAX_CONNECTIONS = 256


async def _start(app: web.Application, host: str, port: int, deadline: float,
                 max_connections: int, hot_path: Door | None = None) -> web.AppRunner:
    # access_log=None: an access line per request would cost more than the
    # handler; the metrics count requests by route and status instead.
    runner = DoorRunner(app, door=hot_path, access_log=None, handle_signals=False,
                        shutdown_timeout=deadline, logger=http_logger())
    await runner.setup()
    # reuse_port: every door process binds the same port; the kernel spreads
    # connections over them.
    await CappedSite(runner, host, port, max_connections=max_connections, reuse_port=True,
                     backlog=4096).start()
    return runner


# Set by a SIGHUP that arrives before the door can reload (while it starts).
_early_reload: list[int] = []


def _note_early_reload(signum: int, frame: object) -> None:
    _early_reload.append(signum)


async def serve(settings: Settings, index: int) -> None:
    """Run one door process until SIGTERM or SIGINT, then shut down in phases."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # The handler only sets the event; the main task does the draining.
        loop.add_signal_handler(signum, stop.set)
    door_settings = settings.door
    async with open_door(settings, on_fatal=stop.set) as door:
        # Key rotation without a restart (intake/key_reload.py); quick and
        # synchronous, so it runs in the handler itself.
        loop.add_signal_handler(signal.SIGHUP, on_reload_signal, door, index)
        if _early_reload:
            on_reload_signal(door, index)  # the settings read at start may be older
        deadline = door_settings.shutdown_deadline_seconds
        public = await _start(build_public_app(door), settings.public.host,
                              settings.public.port, deadline, settings.public.max_connections,
                              hot_path=door)
        # The admin port is private; its cap only keeps a runaway scraper bounded.
        admin = await _start(build_admin_app(door), settings.admin.host,
                             settings.admin.port, deadline, ADMIN_MAX_CONNECTIONS)
        log.info("door process %d listening on %s:%d (admin %s:%d)", index,
                 settings.public.host, settings.public.port,
                 settings.admin.host, settings.admin.port)
        await stop.wait()
        # Phase 1: readiness fails, so load balancers stop sending.
        door.draining = True
        log.info("door process %d draining", index)
        await asyncio.sleep(door_settings.drain_grace_seconds)
        # Phase 2: close the listeners and answer every request in hand
        # (each admitted one gets its 202), within the deadline.
        try:
            async with asyncio.timeout(deadline):
                await public.cleanup()
        except TimeoutError:
            log.warning("door process %d: requests still open at the deadline", index)
        await admin.cleanup()
    # Phase 3 (leaving open_door): pending groups flushed, Redis closed.
    log.info("door process %d stopped", index)


def main(argv: list[str] | None = None) -> int:
    """Entry point of a door process started by `gelombang serve`."""
    parser = argparse.ArgumentParser(prog="gelombang-door")
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args(argv)
    # SIGHUP would end the process by default; until the door can reload, note it.
    signal.signal(signal.SIGHUP, _note_early_reload)
    try:
        settings = Settings.load()
        settings.keys.require_door()
    except ConfigError as exc:
        print(f"gelombang: invalid configuration: {exc}", file=sys.stderr)
        return 3
    # Nothing the door logs carries request data (config/log_format.py).
    configure_logging(settings, f"door-{args.index}")
    try:
        uvloop.run(serve(settings, args.index))
    except (EvictingRedis, BackgroundTaskFailed) as exc:
        cause = exc if isinstance(exc, EvictingRedis) else exc.__cause__
        if not isinstance(cause, EvictingRedis):
            raise
        print(f"gelombang: door process {args.index} refusing to run: {cause}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
