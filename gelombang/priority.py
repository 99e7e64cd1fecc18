"""CPU priority for the processes of a one-machine stack: the door first.

A launcher (the dev stack's supervisor) starts each background process nicer
than itself (config `[nice]`), so on a saturated machine the scheduler gives
the door's answers the CPU first and verification catches up afterwards.

Two knobs, because Linux has two levels. Each process gets its niceness
before its first instruction (in the child, between fork and exec), so every
thread and child it starts inherits it. And each app process runs in its own
session (`start_new_session`), which with autogrouping
(/proc/sys/kernel/sched_autogroup_enabled, on in most desktop and server
kernels) is its own scheduling group: the kernel first shares the CPU between
groups, by the group's nice, and only then between threads by theirs. Without
the group's nice, a niceness would rank a process only against its own
threads. Autogroups are not used for processes in a cgroup with its own CPU
controller (containers, systemd units with CPU accounting), where the
thread's nice is what counts, inside that cgroup only.
"""

from __future__ import annotations

import errno
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

AUTOGROUP_SWITCH: Final = Path("/proc/sys/kernel/sched_autogroup_enabled")
# The kernel takes one autogroup change per 100 ms from an unprivileged writer
# (EAGAIN before): the workers start back to back.
_AUTOGROUP_TRIES: Final = 20
_AUTOGROUP_PAUSE_SECONDS: Final = 0.05


def niceness(pid: int = 0) -> int:
    """A process's niceness as /proc/<pid>/stat shows it (field 19); 0 is this process."""
    stat = Path(f"/proc/{pid or 'self'}/stat").read_text()
    # The fields after the parenthesised command name, which may hold spaces,
    # start at field 3 (the state letter).
    return int(stat.rpartition(")")[2].split()[16])


def in_child(increment: int) -> Callable[[], object] | None:
    """A `preexec_fn` that makes the child `increment` nicer; None when it stays as it is.

    It runs between fork and exec, where only async-signal-safe work is sound
    when the parent has threads: it is one system call, nothing else.
    """
    if increment == 0:
        return None
    return functools.partial(os.nice, increment)


def autogroup_enabled() -> bool:
    """Whether the kernel groups processes by session for scheduling."""
    try:
        return AUTOGROUP_SWITCH.read_text().strip() == "1"
    except OSError:
        return False


def autogroup_nice(pid: int) -> int | None:
    """The nice of pid's autogroup, or None when the kernel has none for it."""
    try:
        # e.g. "/autogroup-4711 nice 10"
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def set_autogroup_nice(pid: int, nice: int) -> bool:
    """Give pid's session group the nice `nice`; False where the kernel has no autogroups.

    For a process that leads its own session: the group is the whole session's.
    """
    if not autogroup_enabled():
        return False
    path = Path(f"/proc/{pid}/autogroup")
    for _ in range(_AUTOGROUP_TRIES):
        try:
            path.write_text(str(nice))
            return True
        except FileNotFoundError:
            return False  # a kernel without CONFIG_SCHED_AUTOGROUP, or pid is gone
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise
        time.sleep(_AUTOGROUP_PAUSE_SECONDS)
    raise OSError(errno.EAGAIN, f"the kernel kept refusing to change {path}")
