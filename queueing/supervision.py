"""Supervision of a process's long-lived background tasks: none of them dies unnoticed.

A task started with `asyncio.create_task` and awaited only at shutdown dies
silently: its exception waits in the task object until someone looks, while
the process goes on as if the loop still ran (an audit archive that stopped
archiving, a heartbeat that stopped beating). Every long-lived background
task of the door and the workers runs under a `Supervisor` instead, with one
of two policies, chosen per task:

- "restart": an unexpected error is logged (its type, never its message,
  which could quote data) and the task starts again after a back-off
  (1 s doubling to 30 s; back to 1 s once a run lasted a minute). For loops
  whose failure only delays work that waits safely meanwhile.
- "stop": the error is logged as critical and the process is told to stop
  (`on_stop`); `check()` then raises `BackgroundTaskFailed`, so the process
  exits non-zero. For loops whose failure breaks a promise the process
  makes to others (its heartbeat, the renewal of what it holds).

A task that returns normally is done (its loop saw the stop flag).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal

log = logging.getLogger("gelombang.supervision")

Policy = Literal["restart", "stop"]

FIRST_RESTART_SECONDS: Final = 1.0
MAX_RESTART_SECONDS: Final = 30.0
# A run this long counts as healthy: the next failure waits the first delay again.
HEALTHY_RUN_SECONDS: Final = 60.0


class BackgroundTaskFailed(Exception):
    """A background task with the "stop" policy failed; the process stopped for it."""

    def __init__(self, task: str) -> None:
        super().__init__(f"background task {task!r} failed")
        self.task = task


class Supervisor:
    """The long-lived background tasks of one process (or one component of it)."""

    def __init__(self, on_stop: Callable[[], None] | None = None, *,
                 first_delay: float = FIRST_RESTART_SECONDS,
                 max_delay: float = MAX_RESTART_SECONDS) -> None:
        self._on_stop = on_stop
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._tasks: list[asyncio.Task[None]] = []
        self.restarts = 0
        # The first "stop" task that failed, and its error.
        self.failed: tuple[str, BaseException] | None = None

    def start(self, name: str, run: Callable[[], Awaitable[None]], policy: Policy) -> None:
        """Run `run()` in a task under `policy` until it returns or `close()` cancels it."""
        self._tasks.append(asyncio.create_task(self._supervise(name, run, policy), name=name))

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]],
                         policy: Policy) -> None:
        delay = self._first_delay
        while True:
            started = time.monotonic()
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if policy == "stop":
                    log.critical("background task %s failed (%s); stopping the process",
                                 name, type(exc).__name__)
                    if self.failed is None:
                        self.failed = (name, exc)
                    if self._on_stop is not None:
                        self._on_stop()
                    return
                if time.monotonic() - started >= HEALTHY_RUN_SECONDS:
                    delay = self._first_delay
                log.error("background task %s failed (%s); restarting in %.1f s",
                          name, type(exc).__name__, delay)
                self.restarts += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_delay)

    async def close(self, wait: float | None = None) -> bool:
        """Cancel every task and wait for them (up to `wait` seconds); False if some did not end."""
        for task in self._tasks:
            task.cancel()
        if not self._tasks:
            return True
        done, pending = await asyncio.wait(self._tasks, timeout=wait)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: _supervise raises nothing but its cancel
        return not pending

    def check(self) -> None:
        """Raise BackgroundTaskFailed if a "stop" task failed (after the process stopped)."""
        if self.failed is not None:
            name, exc = self.failed
            raise BackgroundTaskFailed(name) from exc
