"""`gelombang serve`'s supervisor never leaves a door process running behind it."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from intake.serve_command import Supervisor

# A stand-in door process: ignores SIGTERM when asked to, as a stuck one would.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
OBEDIENT = "import time; time.sleep(60)"


def _supervisor(tmp_path: Path, code: str, kill_after: float = 60.0) -> Supervisor:
    supervisor = Supervisor(1, tmp_path, kill_after)
    # The door's own argument (--index N) follows the command: `-c` ignores it.
    supervisor.command = [sys.executable, "-c", code]
    return supervisor


def _wait_exit(supervisor: Supervisor, seconds: float) -> int | None:
    child = supervisor._children[0]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        supervisor._kill_stuck()
        if child.poll() is not None:
            return child.returncode
        time.sleep(0.05)
    child.kill()
    child.wait()
    return None


def test_a_door_process_started_after_the_stop_signal_is_stopped_too(tmp_path: Path) -> None:
    supervisor = _supervisor(tmp_path, OBEDIENT)
    supervisor._forward(signal.SIGTERM, None)  # e.g. while a crashed one was being restarted
    supervisor._spawn(0)
    assert _wait_exit(supervisor, 10.0) == -signal.SIGTERM


def test_a_door_process_stuck_after_the_stop_signal_is_killed(tmp_path: Path) -> None:
    supervisor = _supervisor(tmp_path, STUBBORN, kill_after=0.5)
    supervisor._spawn(0)
    time.sleep(0.3)  # the stand-in has set its SIGTERM handler
    supervisor._forward(signal.SIGTERM, None)
    assert _wait_exit(supervisor, 10.0) == -signal.SIGKILL


def test_a_stuck_door_process_is_given_its_whole_shutdown_first(tmp_path: Path) -> None:
    supervisor = _supervisor(tmp_path, STUBBORN, kill_after=30.0)
    supervisor._spawn(0)
    time.sleep(0.3)
    supervisor._forward(signal.SIGTERM, None)
    assert _wait_exit(supervisor, 1.0) is None  # still running at 1 s of 30
