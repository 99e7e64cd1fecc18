"""`gelombang serve`: start N door processes sharing the ports, and supervise them."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from config.log_format import configure_logging
from config.settings import Settings
from queueing.redis_client import REDIS_UNAVAILABLE, connect
from queueing.redis_memory import require_noeviction

log = logging.getLogger("gelombang.serve")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A door process that dies within this long of its start is not restarted
# again at once: a crash loop would only burn CPU.
RESTART_BACKOFF_SECONDS = 1.0
# Beyond a door process's own phased shutdown (drain grace, listeners, Redis).
KILL_MARGIN_SECONDS = 10.0


def register(subparsers: Any) -> None:
    """Add the `serve` subcommand."""
    parser = subparsers.add_parser("serve", help="run the intake door (public and admin ports)")
    parser.add_argument("--processes", type=int, default=None,
                        help="door processes sharing the ports (default: door.processes)")
    parser.set_defaults(handler=run)


def _metrics_dir() -> Path:
    # prometheus-client's multiprocess mode needs an empty folder per run:
    # samples left by an earlier run would be added to this one's.
    given = os.environ.get(MULTIPROC_ENV)
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="gelombang-metrics-"))
    if given and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


class Supervisor:
    """Starts the door processes, restarts crashed ones, forwards SIGTERM and SIGHUP."""

    def __init__(self, count: int, metrics_dir: Path, kill_after: float) -> None:
        self._count = count
        self._metrics_dir = metrics_dir
        # A door process still running this long after the stop signal is stuck:
        # it is killed rather than left running once the supervisor is gone.
        self._kill_after = kill_after
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._started: dict[int, float] = {}
        self._stopping = False
        self._stop_signalled_at = 0.0
        self.command = [sys.executable, "-m", "intake.process"]

    def _spawn(self, index: int) -> None:
        env = {**os.environ, MULTIPROC_ENV: str(self._metrics_dir)}
        child = subprocess.Popen([*self.command, "--index", str(index)], env=env)
        self._children[index] = child
        self._started[index] = time.monotonic()
        if self._stopping:
            # The stop signal came while this one was being started: it was not
            # among the children told, so it is told now.
            child.send_signal(signal.SIGTERM)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            self._stop_signalled_at = time.monotonic()
        self._stopping = True
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def _kill_stuck(self) -> None:
        if not self._stopping or time.monotonic() - self._stop_signalled_at < self._kill_after:
            return
        for index, child in self._children.items():
            if child.poll() is None:
                log.error("door process %d did not stop within %.0f s; killing it", index,
                          self._kill_after)
                child.kill()

    def _reload(self, signum: int, frame: FrameType | None) -> None:
        # Each door process reloads its sealing keys (intake/key_reload.py); a
        # process started later reads the new configuration anyway.
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGHUP)

    def run(self) -> int:
        """Run until every door process has exited after a stop signal."""
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        signal.signal(signal.SIGHUP, self._reload)
        for index in range(self._count):
            self._spawn(index)
        worst = 0
        while self._children:
            time.sleep(0.2)
            self._kill_stuck()
            for index, child in list(self._children.items()):
                code = child.poll()
                if code is None:
                    continue
                del self._children[index]
                self._mark_dead(child.pid)
                if self._stopping:
                    worst = max(worst, abs(code))
                    continue
                log.warning("door process %d exited with %d; restarting", index, code)
                if time.monotonic() - self._started[index] < RESTART_BACKOFF_SECONDS:
                    time.sleep(RESTART_BACKOFF_SECONDS)
                if not self._stopping:  # a stop signal may have come during the backoff
                    self._spawn(index)
        return worst

    def _mark_dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]


async def _check_redis(settings: Settings) -> None:
    """Refuse an evicting Redis before starting any door process (one that is not
    there yet is checked by each door process once it answers)."""
    redis = connect(settings.redis, socket_timeout=settings.redis.timeout_seconds,
                    socket_connect_timeout=settings.redis.timeout_seconds)
    try:
        async with asyncio.timeout(settings.redis.timeout_seconds * 2):
            await require_noeviction(redis)
    except REDIS_UNAVAILABLE:
        pass
    finally:
        await redis.aclose()


def run(args: argparse.Namespace) -> int:
    """Handler of `gelombang serve`."""
    settings = Settings.load()
    # In the configured format, as the door processes it starts (config/log_format.py).
    configure_logging(settings, "serve")
    settings.keys.require_door()  # fail here, once, rather than in every child
    asyncio.run(_check_redis(settings))  # likewise: EvictingRedis, exit status 3
    count = args.processes or settings.door.processes
    door = settings.door
    kill_after = (door.drain_grace_seconds + 2 * door.shutdown_deadline_seconds
                  + settings.redis.timeout_seconds + settings.redis.outcome_check_seconds
                  + KILL_MARGIN_SECONDS)
    return Supervisor(count, _metrics_dir(), kill_after).run()
