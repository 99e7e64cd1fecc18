"""Redis and PostgreSQL server processes on loopback, for the dev stack and the test suite."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self, TypeVar

from gelombang.pg_layout import (
    POSTGRES_USER,
    PostgresBinaries,
    prepare_data_dir,
    remove_data_dir,
    socket_dir_for,
)
from gelombang.processes import (
    ServiceError,
    free_port,
    kill_group,
    open_log,
    send_signal,
    stop_process,
    wait_exit,
    wait_until_ready,
)

__all__ = [
    "AppendFsync",
    "ClusterNodeOptions",
    "PostgresServer",
    "RedisServer",
    "ServiceError",
    "postgres_dsn",
    "remove_postgres_data",
    "start_postgres",
    "start_redis",
]

AppendFsync = Literal["always", "everysec", "no"]
StopMode = Literal["smart", "fast", "immediate"]


@dataclass(frozen=True, slots=True)
class ClusterNodeOptions:
    """What makes a redis-server a Redis Cluster node."""

    bus_port: int  # explicit: port + 10000 may be taken, or past 65535
    node_timeout_ms: int
    # No: a master that is down takes only its own slots down, not the whole cluster.
    require_full_coverage: bool = False

    def arguments(self) -> list[str]:
        """The redis-server options (the node's state file lives in its data folder)."""
        return [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-require-full-coverage", "yes" if self.require_full_coverage else "no",
        ]  # fmt: skip

HOST = "127.0.0.1"
DEV_ROLE = "gelombang"
DEV_DATABASE = "gelombang"

# PostgreSQL's shutdown modes are signals to the postmaster (what `pg_ctl stop -m` sends).
_STOP_SIGNALS: dict[StopMode, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}


def postgres_dsn(port: int) -> str:
    """The DSN of the dev role and database on a local cluster at port."""
    return f"postgresql://{DEV_ROLE}@{HOST}:{port}/{DEV_DATABASE}"


class _ServerProcess:
    """What every server of the dev stack shares: the process started last."""

    kind = "server"
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's pid; it must have been started."""
        if self._proc is None:
            raise ServiceError(f"{self.kind} is not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the process started last is still alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The process started last, for supervisors that wait on it."""
        return self._proc

    def start(self, timeout: float) -> Self:
        """Start the server and wait until it answers; raise ServiceError if it does not."""
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL the process group, as a crash (Redis keeps what its AOF holds,
        PostgreSQL replays its WAL at the next start)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        kill_group(self._proc.pid)
        wait_exit(self._proc.pid, 10.0, self._proc)


_Server = TypeVar("_Server", bound=_ServerProcess)


def _start_on_a_port(make: Callable[[int], _Server], port: int, timeout: float) -> _Server:
    """Start a server on `port`, or on a free port (3 tries: another may take it first)."""
    attempts = 3 if port == 0 else 1
    for attempt in range(attempts):
        server = make(port or free_port())
        try:
            return server.start(timeout)
        except ServiceError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


class RedisServer(_ServerProcess):
    """A redis-server process on 127.0.0.1 with its data (AOF) in one folder."""

    kind = "redis"

    def __init__(
        self,
        data_dir: Path,
        port: int,
        appendfsync: AppendFsync = "always",
        *,
        log_file: Path | None = None,
        cluster: ClusterNodeOptions | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        # Full means refusing writes (the door answers 503), never dropping
        # queued registrations: every process refuses any other policy. Only
        # tests of that refusal start a server with another one.
        self.maxmemory_policy = "noeviction"
        self.appendfsync: AppendFsync = appendfsync
        self.log_file = log_file or self.data_dir.parent / "logs" / "redis.log"
        # None: a standalone server; else a node of a Redis Cluster (gelombang/redis_cluster.py).
        self.cluster = cluster
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL of database 0."""
        return f"redis://{HOST}:{self.port}/0"

    def command(self) -> list[str]:
        """The redis-server argument vector."""
        return [
            shutil.which("redis-server") or "redis-server",
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", self.maxmemory_policy,
            # The AOF is the durability story; RDB snapshots would only add fork pauses.
            "--save", "",
            # Detached by our own Popen instead, so the pid we hold is the server's.
            "--daemonize", "no",
            "--logfile", "",
            *(self.cluster.arguments() if self.cluster is not None else ()),
        ]  # fmt: skip

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start on the same port and data folder (again, after stop or kill)."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open_log(self.log_file)
        try:
            # Own session: a Ctrl-C in the terminal reaches the supervisor only, which
            # then stops the servers in order.
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        finally:
            os.close(log)
        wait_until_ready(
            "redis",
            self._ping,
            pid=self._proc.pid,
            proc=self._proc,
            timeout=timeout,
            log_file=self.log_file,
        )
        return self

    def _ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                # "-LOADING" while the AOF is replayed: not ready yet.
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: Redis fsyncs the AOF and exits (SIGKILL after timeout)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        if not stop_process(self._proc.pid, signal.SIGTERM, timeout, self._proc):
            raise ServiceError(f"redis ignored SIGTERM for {timeout:.0f}s and was killed")

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing is answered."""
        send_signal(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        send_signal(self.pid, signal.SIGCONT)


def start_redis(
    data_dir: Path,
    port: int = 0,
    appendfsync: AppendFsync = "always",
    *,
    log_file: Path | None = None,
    timeout: float = 15.0,
) -> RedisServer:
    """Start Redis on 127.0.0.1:port (a free port when 0) with AOF in data_dir."""
    return _start_on_a_port(
        lambda chosen: RedisServer(data_dir, chosen, appendfsync, log_file=log_file),
        port, timeout)


class PostgresServer(_ServerProcess):
    """A PostgreSQL cluster (postmaster process) on 127.0.0.1 with its data in one folder."""

    kind = "postgres"

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        log_file: Path | None = None,
        fsync: bool = True,
    ) -> None:
        self.data_dir = data_dir.absolute()
        self.port = port
        self.log_file = log_file or self.data_dir.parent / "logs" / "postgres.log"
        self.fsync = fsync
        self.binaries = PostgresBinaries.find()
        self._proc: subprocess.Popen[bytes] | None = None
        # Where the cluster really lives (see pg_layout: root cannot hand /root to postgres).
        self.cluster_dir = prepare_data_dir(self.data_dir)

    @property
    def dsn(self) -> str:
        """The application's DSN: role gelombang, database gelombang."""
        return postgres_dsn(self.port)

    @property
    def admin_dsn(self) -> str:
        """The superuser's DSN, for creating and dropping databases in tests."""
        return f"postgresql://{POSTGRES_USER}@{HOST}:{self.port}/postgres"

    def command(self) -> list[str]:
        """The postgres argument vector."""
        return [
            str(self.binaries.postgres),
            "-D", str(self.cluster_dir),
            "-p", str(self.port),
            "-c", f"listen_addresses={HOST}",
            "-c", f"unix_socket_directories={socket_dir_for(self.cluster_dir, self.port)}",
            # fsync off survives any process kill (the OS keeps the writes), only not
            # an OS crash: fine for the throwaway test cluster, never for the dev stack.
            "-c", f"fsync={'on' if self.fsync else 'off'}",
            "-c", f"full_page_writes={'on' if self.fsync else 'off'}",
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> PostgresServer:
        """Start (initdb first when the folder is new), wait, and ensure the dev role and db."""
        if self.running:
            return self
        if not (self.cluster_dir / "PG_VERSION").exists():
            self._initdb()
        log = open_log(self.log_file)
        try:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self.binaries.run_as(),
            )
        finally:
            os.close(log)
        wait_until_ready(
            "postgres",
            self._accepts_connections,
            pid=self._proc.pid,
            proc=self._proc,
            timeout=timeout,
            log_file=self.log_file,
            interval=0.1,
        )
        self._ensure_role_and_database()
        return self

    def _initdb(self) -> None:
        command = [
            str(self.binaries.initdb),
            "-D", str(self.cluster_dir),
            "--username", POSTGRES_USER,
            # Trust on loopback only (listen_addresses): a dev and test cluster, no secrets.
            "--auth", "trust",
            "--encoding", "UTF8",
            "--no-locale",
        ]  # fmt: skip
        if not self.fsync:
            command.append("--no-sync")
        log = open_log(self.log_file)
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                **self.binaries.run_as(),
            )
        finally:
            os.close(log)
        if result.returncode != 0:
            raise ServiceError(f"initdb failed; see {self.log_file}")

    def _accepts_connections(self) -> bool:
        result = subprocess.run(
            [str(self.binaries.pg_isready), "-q", "-h", HOST, "-p", str(self.port), "-t", "1"],
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return result.returncode == 0

    def _ensure_role_and_database(self) -> None:
        script = (
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
            f"'{DEV_ROLE}') THEN CREATE ROLE {DEV_ROLE} LOGIN CREATEDB; END IF; END $$;\n"
            f"SELECT 'CREATE DATABASE {DEV_DATABASE} OWNER {DEV_ROLE}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{DEV_DATABASE}')\\gexec\n"
        )
        result = subprocess.run(
            [str(self.binaries.psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", self.admin_dsn],
            input=script.encode(),
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"creating role and database failed: {result.stderr.decode()}")

    def stop(self, mode: StopMode = "fast", timeout: float = 60.0) -> None:
        """Shut down in the given mode (fast: roll back open transactions, checkpoint)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        if not stop_process(self._proc.pid, _STOP_SIGNALS[mode], timeout, self._proc):
            raise ServiceError(f"postgres did not stop ({mode}) in {timeout:.0f}s and was killed")

    def remove_data(self) -> None:
        """Delete the cluster's files (it must be stopped)."""
        remove_postgres_data(self.data_dir)


def start_postgres(
    data_dir: Path,
    port: int = 0,
    *,
    log_file: Path | None = None,
    fsync: bool = True,
    timeout: float = 60.0,
) -> PostgresServer:
    """Start PostgreSQL on 127.0.0.1:port (a free port when 0), initdb on first use."""
    return _start_on_a_port(
        lambda chosen: PostgresServer(data_dir, chosen, log_file=log_file, fsync=fsync),
        port, timeout)


def remove_postgres_data(data_dir: Path) -> None:
    """Delete a stopped cluster's files, wherever pg_layout placed them."""
    remove_data_dir(data_dir.absolute())
