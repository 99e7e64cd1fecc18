"""Intake first on a shared machine: each process of the stack at its configured niceness."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gelombang.priority import autogroup_enabled, autogroup_nice, niceness
from loadtest.drills.stack import DrillStack, drill_overrides

# Each a different value, the door's too: a role left at the supervisor's own
# niceness, or given another role's, fails.
NICE = {"door": 1, "drain": 4, "email": 7, "nik": 9, "sandboxes": 12}
ROLE_OF = {"door": "door", "worker-store": "drain", "worker-email": "email",
           "worker-nik": "nik", "mail-sink": "sandboxes", "nik-sim": "sandboxes"}


def _tasks(pid: int) -> Iterator[int]:
    """pid's threads and, recursively, its child processes' (the door's processes)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        yield int(task.name)
        for child in (task / "children").read_text().split():
            yield from _tasks(int(child))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DrillStack]:
    stack = DrillStack(tmp_path_factory.mktemp("priority") / "stack",
                       overrides={**drill_overrides(), "nice": NICE})
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


def test_each_role_runs_at_its_configured_niceness(stack: DrillStack) -> None:
    base = niceness()
    for name, role in ROLE_OF.items():
        pid = stack.pid(name)
        expected = min(base + NICE[role], 19)
        # Field 19 of /proc/<pid>/stat, for every thread and forked process.
        found = {tid: niceness(tid) for tid in _tasks(pid)}
        assert set(found.values()) == {expected}, (name, found)
    # The door's worker processes (`serve` forks them) are among those checked.
    door_tasks = list(_tasks(stack.pid("door")))
    assert len(door_tasks) > len(os.listdir(f"/proc/{stack.pid('door')}/task"))
    # Redis and PostgreSQL stay at the supervisor's own: the door waits on one,
    # the drain on the other.
    for server in ("redis", "postgres"):
        assert niceness(stack.pid(server)) == base


@pytest.mark.skipif(not autogroup_enabled(), reason="the kernel does not group by session")
def test_each_session_group_yields_as_its_process(stack: DrillStack) -> None:
    # Each app process leads its own session, so its own scheduling group: a
    # group left at nice 0 would compete with the door's as an equal.
    for name, role in ROLE_OF.items():
        assert autogroup_nice(stack.pid(name)) == NICE[role], name
    for server in ("redis", "postgres"):
        assert autogroup_nice(stack.pid(server)) == 0
