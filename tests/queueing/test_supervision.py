"""The background task supervisor: a failed task is restarted or stops the process,
loudly, by its error's type; none dies unnoticed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from queueing.supervision import BackgroundTaskFailed, Supervisor


class Flaky:
    """A loop that fails its first `failures` runs (the message quotes "data"), then
    waits until cancelled."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0
        self.steady = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise LookupError("3201014506990001")  # a message that must not be logged
        self.steady.set()
        await asyncio.Event().wait()


async def test_a_restart_task_is_restarted_with_back_off_and_logged_by_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="gelombang.supervision")
    flaky = Flaky(failures=3)
    supervisor = Supervisor(first_delay=0.01, max_delay=0.04)
    supervisor.start("flaky loop", flaky.run, "restart")
    await asyncio.wait_for(flaky.steady.wait(), 5)
    assert flaky.runs == 4
    assert supervisor.restarts == 3
    assert [record.getMessage() for record in caplog.records] == [
        "background task flaky loop failed (LookupError); restarting in 0.0 s",
        "background task flaky loop failed (LookupError); restarting in 0.0 s",
        "background task flaky loop failed (LookupError); restarting in 0.0 s",
    ]
    assert "3201014506990001" not in caplog.text
    assert await supervisor.close(wait=1)
    supervisor.check()  # restarted tasks never fail the process


async def test_a_stop_task_that_fails_stops_the_process_and_fails_its_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stopping = asyncio.Event()
    flaky = Flaky(failures=1)
    supervisor = Supervisor(on_stop=stopping.set, first_delay=0.01)
    supervisor.start("heartbeat", flaky.run, "stop")
    await asyncio.wait_for(stopping.wait(), 5)
    assert flaky.runs == 1  # not restarted
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("CRITICAL", "background task heartbeat failed (LookupError); stopping the process")]
    assert await supervisor.close(wait=1)
    with pytest.raises(BackgroundTaskFailed) as failure:
        supervisor.check()
    assert failure.value.task == "heartbeat"
    assert isinstance(failure.value.__cause__, LookupError)


async def test_close_cancels_every_task_and_a_task_that_returns_is_done() -> None:
    ended = asyncio.Event()

    async def returns() -> None:
        ended.set()

    forever = Flaky(failures=0)
    supervisor = Supervisor()
    supervisor.start("returns", returns, "restart")
    supervisor.start("forever", forever.run, "stop")
    await asyncio.wait_for(forever.steady.wait(), 5)
    assert ended.is_set()
    assert await supervisor.close(wait=1)
    assert forever.runs == 1 and supervisor.restarts == 0
    supervisor.check()
