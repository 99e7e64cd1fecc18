"""`gelombang dev`: Redis, PostgreSQL and the app processes on this machine."""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import sys
from pathlib import Path
from types import FrameType, TracebackType

from config.settings import ConfigError, Settings
from gelombang.devapps import APP_PROCESSES
from gelombang.devstate import DEFAULT_STATE_DIR, DevState, read_config
from gelombang.processes import ServiceError, process_alive
from gelombang.services import remove_postgres_data
from gelombang.supervisor import (
    SERVICE_NAMES,
    Service,
    StartOptions,
    running_pid,
    say,
    start_stack,
    stop_services,
)

DEFAULT_REDIS_PORT = 6390
DEFAULT_POSTGRES_PORT = 5440


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dev` and its actions to the gelombang command."""
    parser = subparsers.add_parser(
        "dev",
        help="the local dev stack: Redis, PostgreSQL and the app processes",
        description=__doc__,
    )
    actions = parser.add_subparsers(dest="dev_action", required=True, metavar="ACTION")
    for name, handler, help_text in (
        ("up", _up, "start the stack in the background"),
        ("run", _run, "run the stack in the foreground; Ctrl-C stops it"),
        ("down", _down, "stop everything `up` started"),
        ("status", _status, "what runs, with ports"),
        ("clean", _clean, "stop the stack and delete its state folder"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument(
            "--state-dir",
            type=Path,
            default=DEFAULT_STATE_DIR,
            help="state folder: data, logs, pid files, generated config (default: .dev)",
        )
        if name in ("up", "run"):
            _add_start_options(action)
        action.set_defaults(handler=handler)


def _add_start_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-port",
        type=int,
        default=DEFAULT_REDIS_PORT,
        help=f"0 picks a free port (default: {DEFAULT_REDIS_PORT})",
    )
    parser.add_argument(
        "--postgres-port",
        type=int,
        default=DEFAULT_POSTGRES_PORT,
        help=f"0 picks a free port (default: {DEFAULT_POSTGRES_PORT})",
    )
    parser.add_argument(
        "--appendfsync",
        choices=("always", "everysec", "no"),
        default="always",
        help="Redis AOF fsync policy; everysec can lose the last second of acknowledged "
        "writes on a crash (default: always)",
    )
    parser.add_argument(
        "--no-apps", dest="apps", action="store_false", help="start Redis and PostgreSQL only"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds each process may take to become ready (default: 60)",
    )


def _options(args: argparse.Namespace) -> StartOptions:
    return StartOptions(
        redis_port=args.redis_port,
        postgres_port=args.postgres_port,
        appendfsync=args.appendfsync,
        apps=args.apps,
        timeout=args.timeout,
    )


def _up(args: argparse.Namespace) -> int:
    state = DevState(args.state_dir)
    started: list[Service] = []
    try:
        start_stack(state, _options(args), started)
    except (ServiceError, KeyboardInterrupt) as exc:
        print(f"gelombang dev up: {exc}", file=sys.stderr)
        # Leave things as they were: stop only what this call started.
        stop_services(state, started)
        return 1
    say(f"stack up (state in {state.root}); `gelombang dev down` stops it")
    return 0


def _down(args: argparse.Namespace) -> int:
    state = DevState(args.state_dir)
    found: list[Service] = []
    for name in SERVICE_NAMES:
        pid = running_pid(state, name)
        if pid is None:
            state.pid_file(name).unlink(missing_ok=True)
        else:
            found.append(Service.for_name(name, pid))
    if not found:
        say("nothing runs")
    return 0 if stop_services(state, found) else 1


def _status(args: argparse.Namespace) -> int:
    state = DevState(args.state_dir)
    config = read_config(state)
    addresses = {
        "redis": config.get("redis", {}).get("url", ""),
        "postgres": config.get("postgres", {}).get("dsn", ""),
    }
    settings: Settings | None = None
    if config:
        try:
            settings = Settings.load(**config)
        except ConfigError as exc:
            say(f"(the dev config does not load: {exc})")
    for app in APP_PROCESSES:
        if not app.available():
            addresses[app.name] = f"(skipped: {app.module} does not exist yet)"
        elif app.urls is not None and settings is not None:
            addresses[app.name] = " ".join(app.urls(settings))
    for name in SERVICE_NAMES:
        pid = running_pid(state, name)
        state_text = f"running  pid {pid:<7}" if pid else "stopped  " + " " * 11
        say(f"{name:<14} {state_text} {addresses.get(name, '')}".rstrip())
    return 0


def _clean(args: argparse.Namespace) -> int:
    if _down(args) != 0:
        return 1
    state = DevState(args.state_dir)
    # Clusters may live outside the folder (see gelombang.pg_layout), the test suite's too.
    for cluster in (state.postgres_dir, *state.root.glob("test-*/postgres")):
        remove_postgres_data(cluster)
    shutil.rmtree(state.root, ignore_errors=True)
    say(f"removed {state.root}")
    return 0


class _StopSignals:
    """SIGINT and SIGTERM only record themselves and wake a select() on fileno."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        self._previous: dict[int, object] = {}
        self._previous_fd = -1

    def fileno(self) -> int:
        """Readable once a signal has arrived."""
        return self._read

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # A second Ctrl-C while stopping changes nothing: the ordered stop goes on.
        if self.received is None:
            self.received = signum

    def __enter__(self) -> _StopSignals:
        self._previous_fd = signal.set_wakeup_fd(self._write)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read)
        os.close(self._write)


def _run(args: argparse.Namespace) -> int:
    state = DevState(args.state_dir)
    already = [name for name in SERVICE_NAMES if running_pid(state, name) is not None]
    if already:
        print(
            f"gelombang dev run: already running: {', '.join(already)} "
            "(`gelombang dev down` first)",
            file=sys.stderr,
        )
        return 1
    services: list[Service] = []
    with _StopSignals() as stop:
        try:
            start_stack(state, _options(args), services, interrupted=lambda: stop.received)
        except ServiceError as exc:
            print(f"gelombang dev run: {exc}", file=sys.stderr)
            stop_services(state, services)
            return 1
        status = 0
        if stop.received is None:
            say("all started; Ctrl-C stops everything")
            status = _supervise(services, stop)
        if stop.received is not None:
            say(f"{signal.Signals(stop.received).name}: stopping")
        stop_services(state, services)
    say("stopped")
    return status


def _supervise(services: list[Service], stop: _StopSignals) -> int:
    """Block until a stop signal (0) or until a process exits on its own (1)."""
    pidfds: dict[int, Service] = {}
    try:
        for service in services:
            if process_alive(service.pid):
                pidfds[os.pidfd_open(service.pid)] = service
        while stop.received is None:
            readable, _, _ = select.select([stop.fileno(), *pidfds], [], [])
            for fd in readable:
                if fd in pidfds:
                    service = pidfds[fd]
                    code = service.proc.wait() if service.proc is not None else "?"
                    say(
                        f"{service.name} exited by itself (status {code}); see its log; "
                        "stopping the rest"
                    )
                    return 1
        return 0
    finally:
        for fd in pidfds:
            os.close(fd)
