"""A whole Gelombang stack of real processes for a fault drill, in its own folder.

The same processes as `make run` (Redis with AOF always, PostgreSQL, mail
sink, NIK simulator, the three workers, the door), started by the dev stack's
own supervisor on free loopback ports, with figures that make recovery quick
(entries of a dead worker are reclaimed after seconds, not minutes). A drill
kills, stops, pauses or starves one of them and `restart()` brings back
whatever is not running, on the same ports and data.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from config.settings import Settings
from gelombang.devstate import DevState, read_config
from gelombang.processes import free_port, kill_group, send_signal, wait_exit
from gelombang.services import AppendFsync, remove_postgres_data
from gelombang.supervisor import (
    SERVICE_NAMES,
    Service,
    StartOptions,
    running_pid,
    start_app,
    start_stack,
    stop_services,
)

START_TIMEOUT_SECONDS: Final = 90.0
# Jobs and entries of a killed worker come back this soon.
RECLAIM_SECONDS: Final = 3.0


def drill_overrides() -> dict[str, dict[str, Any]]:
    """Free ports for every listener, and quick recovery figures."""
    public, admin, smtp, nik = (free_port() for _ in range(4))
    return {
        "public": {"port": public, "base_url": f"http://127.0.0.1:{public}"},
        "admin": {"port": admin},
        # Room for the whole surge: the drills measure faults, not shedding.
        "admission": {"rate_per_second": 100_000.0, "burst": 100_000, "refresh_seconds": 0.5},
        "drain": {"claim_idle_seconds": RECLAIM_SECONDS, "block_ms": 200,
                  "heartbeat_seconds": 1.0, "retry_max_seconds": 2.0,
                  "outbox_sweep_seconds": 2.0},
        "email": {"smtp_port": smtp, "claim_idle_seconds": RECLAIM_SECONDS,
                  "retry_base_seconds": 0.2, "retry_max_seconds": 2.0, "max_attempts": 50,
                  "rate_per_second": 5000.0},
        "nik_sim": {"port": nik, "capacity_per_second": 2000.0, "latency_ms_median": 2.0,
                    "latency_ms_p99": 20.0},
        "nik": {"base_url": f"http://127.0.0.1:{nik}", "claim_idle_seconds": RECLAIM_SECONDS,
                "rate_per_second": 2000.0, "burst": 200, "retry_base_seconds": 0.2,
                "retry_max_seconds": 2.0, "breaker_open_seconds": 1.0, "max_attempts": 100},
        "door": {"shutdown_deadline_seconds": 10.0},
    }


class DrillStack:
    """The stack's processes, by the names of gelombang.supervisor."""

    def __init__(self, root: Path, appendfsync: AppendFsync = "always",
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.state = DevState(root)
        self._options = StartOptions(
            redis_port=free_port(), postgres_port=free_port(), appendfsync=appendfsync,
            apps=True, timeout=START_TIMEOUT_SECONDS,
            overrides=overrides if overrides is not None else drill_overrides())
        self._services: list[Service] = []
        self.settings: Settings | None = None

    def start(self) -> Settings:
        """Start every process that is not running (all of them the first time)."""
        if not self._services:
            self._clear_leftovers()
        start_stack(self.state, self._options, self._services)
        self.settings = Settings.load(**read_config(self.state))
        return self.settings

    def restart(self) -> None:
        """Start whatever is not running, on the same ports and data."""
        # The supervisor's progress lines would bury the drill's own.
        with contextlib.redirect_stdout(io.StringIO()):
            start_stack(self.state, self._options, self._services)

    def start_one(self, name: str) -> None:
        """Start one application process that is not running (the rest as they are)."""
        with contextlib.redirect_stdout(io.StringIO()):
            start_app(self.state, self._options, name, self._services)

    def signal_group(self, name: str, sig: signal.Signals) -> None:
        """Signal a server and every process it forked (PostgreSQL's backends too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid(name), sig)

    def close(self, keep: bool = False) -> None:
        """Stop everything and delete the folder (unless `keep`: logs, data)."""
        for name in ("redis", "postgres"):
            pid = running_pid(self.state, name)
            if pid is not None:
                # A paused server cannot stop (PostgreSQL: nor its backends).
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGCONT)
        live = [s for s in self._services if running_pid(self.state, s.name) == s.pid]
        # In start order, whatever order the restarts left them in: stopped in reverse.
        live.sort(key=lambda service: SERVICE_NAMES.index(service.name))
        stop_services(self.state, live)
        self._reap_the_rest()
        if not keep:
            self._clear_leftovers()

    def _reap_the_rest(self) -> None:
        """Wait for every process this stack started that the stop did not: one that
        exited by itself (never waited for, it would stay a zombie and its Popen
        warn when collected), or one a restart replaced and left running (killed)."""
        for service in self._services:
            if service.proc is not None and service.proc.poll() is None:
                kill_group(service.pid)
                service.proc.wait(10.0)

    def _clear_leftovers(self) -> None:
        """Kill what a run that died left running in this folder, and delete it."""
        for name in SERVICE_NAMES:
            pid = running_pid(self.state, name)
            if pid is not None:
                kill_group(pid)
                wait_exit(pid, 10.0)
        remove_postgres_data(self.state.postgres_dir)
        shutil.rmtree(self.state.root, ignore_errors=True)

    def pid(self, name: str) -> int:
        """The live pid of a process of the stack."""
        pid = running_pid(self.state, name)
        if pid is None:
            raise LookupError(f"{name} is not running{self._why_gone(name)}")
        return pid

    def _why_gone(self, name: str) -> str:
        """How the last process started under this name ended, and its log's last lines."""
        ours = [s for s in self._services if s.name == name and s.proc is not None]
        status = ours[-1].proc.poll() if ours and ours[-1].proc is not None else None
        try:
            tail = self.state.log(name).read_text(errors="replace").splitlines()[-15:]
        except OSError:
            tail = []
        # The stack's logs carry no personal data (the session's log guard checks it).
        return f" (exit status {status}); its log ends:\n" + "\n".join(tail)

    def kill(self, name: str) -> None:
        """SIGKILL the process and its children, as a crash, and reap it."""
        pid = self.pid(name)
        kill_group(pid)
        wait_exit(pid, 10.0, self._own(name, pid))
        self.state.pid_file(name).unlink(missing_ok=True)

    def stop(self, name: str) -> None:
        """Stop gracefully: SIGTERM (PostgreSQL: SIGINT, fast shutdown)."""
        pid = self.pid(name)
        service = next((s for s in self._services if s.pid == pid), Service(name, pid))
        service.stop()
        self.state.pid_file(name).unlink(missing_ok=True)

    def signal(self, name: str, sig: signal.Signals) -> None:
        """Send a signal (SIGSTOP, SIGCONT) to the process."""
        send_signal(self.pid(name), sig)

    def _own(self, name: str, pid: int) -> subprocess.Popen[bytes] | None:
        service = next((s for s in self._services if s.name == name and s.pid == pid), None)
        return service.proc if service is not None else None

    def log(self, name: str) -> Path:
        """A process's log file."""
        return self.state.log(name)
