"""Process plumbing shared by the dev stack and the test suite: pids, signals, waits, ports."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ServiceError(Exception):
    """A server or application process did not start or stop as it should."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive ports nothing listens on right now.

    For processes that each take the next free port of a range: with only the
    first known free, another program may hold the second."""
    while True:
        first = free_port(host)
        if first + count <= 65536 and all(port_is_free(first + step, host)
                                           for step in range(1, count)):
            return first


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener could bind host:port now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def tcp_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def process_alive(pid: int) -> bool:
    """Whether pid is a live process; a zombie counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the parenthesised command name, which may hold spaces.
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def process_cmdline(pid: int) -> list[str]:
    """The argument vector of pid, empty when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def send_signal(pid: int, sig: signal.Signals) -> None:
    """Signal pid, ignoring a process that is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def kill_group(pid: int) -> None:
    """SIGKILL pid's whole process group: the server and every child it forked."""
    # Servers start in their own session, so their group id is their pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def wait_exit(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait until pid exits; True if it did within timeout."""
    if proc is not None:
        # Our own child: wait() also reaps it, so no zombie is left behind.
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    # Someone else's child (started by an earlier `dev up`): a pidfd becomes readable
    # when it exits, whoever reaps it, so there is no need to poll.
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], max(timeout, 0.0))
        return bool(readable) or not process_alive(pid)
    finally:
        os.close(fd)


def wait_until_ready(
    name: str,
    ready: Callable[[], bool],
    *,
    pid: int,
    proc: subprocess.Popen[bytes] | None,
    timeout: float,
    log_file: Path,
    interval: float = 0.05,
) -> None:
    """Call ready() until it holds; fail at once if the process exits, or at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        exited = proc.poll() is not None if proc is not None else not process_alive(pid)
        if exited:
            raise ServiceError(f"{name} exited during start-up; see {log_file}\n{tail(log_file)}")
        if time.monotonic() >= deadline:
            raise ServiceError(
                f"{name} not ready after {timeout:.0f}s; see {log_file}\n{tail(log_file)}"
            )
        # Sleeping on the process itself: an early exit ends the wait at once.
        wait_exit(pid, interval, proc)


def stop_process(
    pid: int,
    sig: signal.Signals,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
) -> bool:
    """Send sig and wait; on timeout SIGKILL the process group. True if it stopped gracefully."""
    send_signal(pid, sig)
    # A paused (SIGSTOPped) process handles nothing until it is continued.
    send_signal(pid, signal.SIGCONT)
    if wait_exit(pid, timeout, proc):
        return True
    kill_group(pid)
    wait_exit(pid, 5.0, proc)
    return False


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, indented, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "    (no log written)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def open_log(path: Path) -> int:
    """A file descriptor appending to path, for a child's stdout and stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def read_pid_file(path: Path) -> int | None:
    """The pid in path, or None when the file is missing or malformed."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def write_pid_file(path: Path, pid: int) -> None:
    """Record pid in path (replacing it atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"{pid}\n")
    temporary.replace(path)
