"""Starting the dev stack in order and stopping it in reverse, tracked by pid files."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config.settings import CONFIG_ENV, Settings
from gelombang.devapps import APP_PROCESSES, AppProcess
from gelombang.devstate import DevState, config_port, ensure_config, read_config
from gelombang.priority import in_child, set_autogroup_nice
from gelombang.processes import (
    ServiceError,
    free_port,
    open_log,
    process_alive,
    process_cmdline,
    read_pid_file,
    stop_process,
    tcp_accepts,
    wait_until_ready,
    write_pid_file,
)
from gelombang.services import AppendFsync, PostgresServer, RedisServer

# Start order; stopping goes the other way (app processes, then PostgreSQL, then Redis).
SERVICE_NAMES: tuple[str, ...] = ("redis", "postgres", *(app.name for app in APP_PROCESSES))


@dataclass(frozen=True)
class _StopSpec:
    signal: signal.Signals
    timeout: float
    # Part of the command line, so a recycled pid in a stale pid file is not taken for ours.
    marker: str


def _stop_spec(name: str) -> _StopSpec:
    if name == "redis":
        return _StopSpec(signal.SIGTERM, 30.0, "redis-server")
    if name == "postgres":
        # SIGINT is PostgreSQL's fast shutdown, as `pg_ctl stop -m fast`.
        return _StopSpec(signal.SIGINT, 60.0, "postgres")
    app = next(app for app in APP_PROCESSES if app.name == name)
    return _StopSpec(signal.SIGTERM, app.stop_timeout, "gelombang")


@dataclass
class Service:
    """A running process of the stack."""

    name: str
    pid: int
    # Our own child when this process started it; None when an earlier `dev up` did.
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_name(cls, name: str, pid: int) -> Service:
        """A process found through its pid file."""
        return cls(name, pid)

    def stop(self) -> bool:
        """Stop gracefully, SIGKILL after its deadline; True unless it had to be killed."""
        spec = _stop_spec(self.name)
        if self.proc is not None:
            if self.proc.poll() is not None:
                return True
        elif not _is(self.pid, spec.marker):
            return True
        return stop_process(self.pid, spec.signal, spec.timeout, self.proc)


@dataclass(frozen=True)
class StartOptions:
    """What `dev up` and `dev run` were asked for."""

    redis_port: int
    postgres_port: int
    appendfsync: AppendFsync
    apps: bool
    timeout: float
    # Single config keys set over the dev config (see devstate.ensure_config).
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def say(line: str) -> None:
    """One progress line on stdout."""
    print(line, flush=True)


def _is(pid: int, marker: str) -> bool:
    return process_alive(pid) and marker in " ".join(process_cmdline(pid))


def running_pid(state: DevState, name: str) -> int | None:
    """The pid of the stack's process `name` if its pid file names a live one."""
    pid = read_pid_file(state.pid_file(name))
    if pid is None or not _is(pid, _stop_spec(name).marker):
        return None
    return pid


def stop_services(state: DevState, services: list[Service]) -> bool:
    """Stop in reverse start order and remove the pid files; True if all stopped gracefully."""
    graceful = True
    for service in reversed(services):
        say(f"stopping {service.name} (pid {service.pid})")
        if not service.stop():
            say(
                f"{service.name} did not stop in time and was killed; see {state.log(service.name)}"
            )
            graceful = False
        state.pid_file(service.name).unlink(missing_ok=True)
    services.clear()
    return graceful


def _port(state: DevState, name: str, section: str, key: str, requested: int) -> int:
    """The running server's port if it runs, else the requested one (0: a free one)."""
    if running_pid(state, name) is not None:
        current = config_port(state, section, key)
        if current is not None:
            return current
    return requested or free_port()


def start_stack(
    state: DevState,
    options: StartOptions,
    started: list[Service],
    interrupted: Callable[[], object] = lambda: None,
) -> None:
    """Start what is not running yet, in order, appending each started process to started."""
    state.create()
    redis = RedisServer(
        state.redis_dir,
        _port(state, "redis", "redis", "url", options.redis_port),
        options.appendfsync,
        log_file=state.log("redis"),
    )
    postgres = PostgresServer(
        state.postgres_dir,
        _port(state, "postgres", "postgres", "dsn", options.postgres_port),
        log_file=state.log("postgres"),
    )
    config_file = ensure_config(state, redis.url, postgres.dsn, options.overrides)
    for name, server, address in (
        ("redis", redis, redis.url),
        ("postgres", postgres, postgres.dsn),
    ):
        if interrupted():
            return
        pid = running_pid(state, name)
        if pid is not None:
            say(f"{name:<9} already running (pid {pid})  {address}")
            continue
        server.start(options.timeout)
        started.append(Service(name, server.pid, server.process))
        write_pid_file(state.pid_file(name), server.pid)
        say(f"{name:<9} ready  {address}  (pid {server.pid}, log {state.log(name)})")
    if options.apps:
        _start_apps(state, options, config_file, started, interrupted)


def _start_apps(
    state: DevState,
    options: StartOptions,
    config_file: Path,
    started: list[Service],
    interrupted: Callable[[], object],
) -> None:
    env = {**os.environ, CONFIG_ENV: str(config_file)}
    settings: Settings | None = None
    for app in APP_PROCESSES:
        if interrupted():
            return
        if not app.available():
            say(f"{app.name:<9} skipped: {app.module} does not exist yet")
            continue
        pid = running_pid(state, app.name)
        if pid is not None:
            say(f"{app.name:<9} already running (pid {pid})")
            continue
        if settings is None:
            settings = Settings.load(**read_config(state))
        _start_app(state, app, options, env, settings, started)


def start_app(state: DevState, options: StartOptions, name: str, started: list[Service]) -> None:
    """Start the one application process `name`, unless it runs; nothing else.

    For a drill that restarts a worker while a server is hung: `start_stack`
    would run the migrations first, and wait on the hung server.
    """
    app = next(app for app in APP_PROCESSES if app.name == name)
    if running_pid(state, name) is None:
        env = {**os.environ, CONFIG_ENV: str(state.config_file.absolute())}
        _start_app(state, app, options, env, Settings.load(**read_config(state)), started)


def _start_app(
    state: DevState,
    app: AppProcess,
    options: StartOptions,
    env: dict[str, str],
    settings: Settings,
    started: list[Service],
) -> None:
    # The venv's interpreter: the one running this command.
    command = [sys.executable, "-m", "gelombang", *app.args]
    nice = app.nice(settings)
    log_file = state.log(app.name)
    log = open_log(log_file)
    try:
        if app.once:
            result = subprocess.run(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise ServiceError(
                    f"{app.name} failed (status {result.returncode}); see {log_file}"
                )
            say(f"{app.name:<9} done")
            return
        # Own session, as the servers: Ctrl-C reaches the supervisor, which stops in order.
        # Nicer from its first instruction, so its threads and children are too.
        proc = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=in_child(nice),
        )  # fmt: skip
    finally:
        os.close(log)
    started.append(Service(app.name, proc.pid, proc))
    write_pid_file(state.pid_file(app.name), proc.pid)
    if nice:
        # Its session is its own scheduling group where the kernel groups by
        # session: the group yields too, or the nice ranks only its own threads.
        try:
            set_autogroup_nice(proc.pid, nice)
        except OSError as exc:
            say(f"{app.name:<9} runs nicer, but its session group could not be: {exc}")
    urls = app.urls(settings) if app.urls is not None else ()
    if urls:
        port = urlsplit(urls[0]).port
        if port:
            wait_until_ready(
                app.name,
                functools.partial(tcp_accepts, port),
                pid=proc.pid,
                proc=proc,
                timeout=options.timeout,
                log_file=log_file,
                interval=0.1,
            )
    say(f"{app.name:<9} ready  {' '.join(urls)}  (pid {proc.pid}, nice +{nice}, log {log_file})")
