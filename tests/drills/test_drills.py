"""Fault drills on a whole stack of real processes: each fault, then the invariant.

One stack serves every drill here (a drill mends what it breaks); each drill
judges only its own applicants.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from gelombang.processes import process_alive
from loadtest.drills.catalogue import drills
from loadtest.drills.runner import run_drill
from loadtest.drills.stack import DrillStack
from loadtest.drills.traffic import Applicant, SurgeRecord
from loadtest.drills.verdict import Tolerance, Verdict, judge
from loadtest.registrants import RegistrantFactory
from tests.support import REPO_ROOT

pytestmark = pytest.mark.slow

COUNT = 300
RATE = 200.0
SETTLE_SECONDS = 90.0
# What each drill's fault must visibly cause, beyond keeping the invariant.
EVIDENCE: dict[str, Callable[[Verdict], bool]] = {
    "redis-kill": lambda v: v.unavailable > 0,
    "redis-kill-everysec": lambda v: v.unavailable > 0,
    "redis-pause": lambda v: v.unavailable > 0,
    # The second strike outlasts the door's check: some outcomes stay unknown.
    "redis-pause-after-send": lambda v: v.unknown > 0,
    "redis-full": lambda v: v.unavailable > 0,
    "door-sigterm": lambda v: v.connection_errors > 0,
    "door-kill": lambda v: v.connection_errors > 0,
}


@pytest.fixture(scope="module")
def drill_stack() -> Iterator[DrillStack]:
    state_dir = REPO_ROOT / ".dev"
    # A run killed before its teardown left a stack running: stop it.
    for folder in state_dir.glob("drills-test-*"):
        owner = folder.name.removeprefix("drills-test-")
        if owner.isdigit() and not process_alive(int(owner)):
            DrillStack(folder).close()
    stack = DrillStack(state_dir / f"drills-test-{os.getpid()}")
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


def _names() -> list[str]:
    return list(drills(Settings.load()))


@pytest.mark.parametrize("name", _names())
async def test_the_drill_keeps_the_invariant(drill_stack: DrillStack, name: str) -> None:
    assert drill_stack.settings is not None
    drill = drills(drill_stack.settings)[name]
    verdict = await run_drill(drill_stack, drill, COUNT, RATE, SETTLE_SECONDS, seed=None)
    # The line holds counts only, never an applicant's data.
    assert verdict.ok, verdict.line()
    assert verdict.stored == verdict.accepted == verdict.sent
    if name in EVIDENCE:
        assert EVIDENCE[name](verdict), f"the fault left no trace: {verdict.line()}"


async def test_a_202_that_was_not_stored_fails_the_verdict(drill_stack: DrillStack) -> None:
    settings = drill_stack.settings
    assert settings is not None
    lost = Applicant(RegistrantFactory().make(), str(uuid.uuid4()), uuid.uuid4(), [202])
    record = SurgeRecord([lost])
    verdict: Verdict = await judge("lost", record, settings, Path(settings.email.maildir),
                                   f"http://127.0.0.1:{settings.nik_sim.port}", Tolerance(),
                                   settle_seconds=0.5)
    assert not verdict.ok
    assert (verdict.accepted, verdict.stored, verdict.missing) == (1, 0, 1)
    assert "1 answered 202 but not stored" in verdict.failures
