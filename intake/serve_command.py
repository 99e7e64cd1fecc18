"""`gelombang serve`: start N door processes sharing the ports, and supervise them."""

from __future__ import annotations

import argparse
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

from config.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A door process that dies within this long of its start is not restarted
# again at once: a crash loop would only burn CPU.
RESTART_BACKOFF_SECONDS = 1.0


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

    def __init__(self, count: int, metrics_dir: Path) -> None:
        self._count = count
        self._metrics_dir = metrics_dir
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._started: dict[int, float] = {}
        self._stopping = False

    def _spawn(self, index: int) -> None:
        env = {**os.environ, MULTIPROC_ENV: str(self._metrics_dir)}
        self._children[index] = subprocess.Popen(
            [sys.executable, "-m", "intake.process", "--index", str(index)], env=env
        )
        self._started[index] = time.monotonic()

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

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
            for index, child in list(self._children.items()):
                code = child.poll()
                if code is None:
                    continue
                del self._children[index]
                self._mark_dead(child.pid)
                if self._stopping:
                    worst = max(worst, abs(code))
                    continue
                print(f"gelombang: door process {index} exited with {code}; restarting",
                      file=sys.stderr)
                if time.monotonic() - self._started[index] < RESTART_BACKOFF_SECONDS:
                    time.sleep(RESTART_BACKOFF_SECONDS)
                self._spawn(index)
        return worst

    def _mark_dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]


def run(args: argparse.Namespace) -> int:
    """Handler of `gelombang serve`."""
    settings = Settings.load()
    settings.keys.require()  # fail here, once, rather than in every child
    count = args.processes or settings.door.processes
    return Supervisor(count, _metrics_dir()).run()
