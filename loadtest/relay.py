"""Every Locust process's records in one report, a progress line, and the run's end.

With `gelombang surge --workers N` Locust runs a master and N workers
(`--processes N`; by hand across machines, `--master --expect-workers N`
and `--worker --master-host …`). Workers send what they recorded since
their last message to the master every second, over Locust's own
connection (`runner.send_message`, a custom message type), so a worker on
another machine, whose disk the surge command cannot read, is in the report
too. The master (or a lone process) absorbs the messages into its
`Recorder`, writes the whole run to `<out>/run.json` every few seconds and
at the end, and prints the progress line the surge command shows.

Locust's own shutdown does not wait for what workers still have to say (a
headless master fires `test_stop` before it even tells the workers to
quit, then gives them half a second), so the run ends here instead: once
the schedule is over the shape keeps the run going until every worker has
sent its final message, which it does when its applicants in flight have
left; a worker that has not after the page time plus `FINISH_AFTER` s is
told to cut its applicants off, and the master stops waiting after
`GIVE_UP_AFTER` s more (the report then lists fewer sources than
workers).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import gevent  # type: ignore[import-untyped]
from gevent.pool import Pool  # type: ignore[import-untyped]
from locust.runners import MasterRunner, WorkerRunner

from loadtest.recorder import PROGRESS_PREFIX, SOURCE_TOTALS, Recorder, progress_line
from loadtest.scenarios import Scenario

RECORDS: Final = "gelombang_surge_records"   # worker → master: records, in flight, final
FINISH: Final = "gelombang_surge_finish"     # master → workers: cut off, send the final
SEND_EVERY: Final = 1.0
WRITE_EVERY: Final = 2.0
PROGRESS_EVERY: Final = 3.0
FINISH_AFTER: Final = 10.0
GIVE_UP_AFTER: Final = 20.0
RUN_FILE: Final = "run"


class Relay:
    """This Locust process's part: its applicants in flight, its records, its role."""

    def __init__(self, scenario: Scenario, recorder: Recorder, out: Path | None) -> None:
        self.scenario = scenario
        self.recorder = recorder
        self.out = out
        self.pool = Pool(scenario.max_in_flight)
        self.role = "local"
        self.runner: Any = None
        self.expected = 1
        self.started = self._second_zero()
        self.seen: set[str] = set()
        self.finals: set[str] = set()
        self.final_sent = False
        self.finish_sent = False

    # ---- every process ----

    def attach(self, environment: Any, **_: Any) -> None:
        """Locust's `init` event: learn the role, register the messages."""
        runner = environment.runner
        self.runner = runner
        if isinstance(runner, MasterRunner):
            self.role = "master"
            self.expected = max(1, int(environment.parsed_options.expect_workers or 1))
            runner.register_message(RECORDS, self._on_records)
        elif isinstance(runner, WorkerRunner):
            self.role = "worker"
            runner.register_message(FINISH, self._on_finish)

    def _second_zero(self) -> float:
        """The schedule's second 0 on this process's monotonic clock: now, or the
        scenario's wall-clock start (`starts_at`, opening-crush) wherever it falls."""
        if self.scenario.starts_at:
            return time.monotonic() + (self.scenario.starts_at - time.time())
        return time.monotonic()

    def on_test_start(self, environment: Any, **_: Any) -> None:
        self.started = self._second_zero()
        if self.role == "worker":
            gevent.spawn(self._send_forever)
            return
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        gevent.spawn(self._write_forever)
        gevent.spawn(self._progress_forever)

    def on_test_stop(self, environment: Any, **_: Any) -> None:
        if self.role == "worker":
            if not self.final_sent:  # stopped early (Ctrl-C, the master gave up)
                self.cut_off()
                self._send(final=True)
            return
        self.cut_off()
        self.write()
        self.progress()

    def elapsed(self) -> float:
        """Seconds since the schedule's second 0 (negative before a set start)."""
        return time.monotonic() - self.started

    def schedule_over(self) -> bool:
        """Whether this process's schedule has ended (no more arrivals)."""
        return self.scenario.rate_at(self.elapsed()) is None

    def arrive(self, applicant: Callable[..., None], *args: Any) -> None:
        """Start one applicant, unless this process already has its bound in flight."""
        if self.pool.full():
            self.recorder.count("generator_full")
            return
        self.pool.spawn(self._guarded, applicant, *args)

    def also(self, task: Callable[..., None], *args: Any) -> None:
        """Start a task within the bound (a verification link), when there is room."""
        if not self.pool.full():
            self.pool.spawn(self._guarded, task, *args)

    def _guarded(self, task: Callable[..., None], *args: Any) -> None:
        try:
            task(*args)
        except Exception as exc:
            # Counted, and named by type only: a message could quote a body.
            self.recorder.count("errors")
            print(f"surge: applicant failed: {type(exc).__name__}", file=sys.stderr)

    def cut_off(self) -> None:
        """End the applicants still in flight (counted as abandoned)."""
        left = len(self.pool)
        if left:
            self.recorder.count("abandoned", left)
            self.pool.kill(block=False)

    # ---- the end of the run (master or lone process, from the shape) ----

    def finished(self, over_for: float) -> bool:
        """Whether the run may stop, `over_for` seconds after the schedule ended."""
        grace = self.scenario.page_seconds + FINISH_AFTER
        if self.role == "local":
            if len(self.pool) == 0:
                return True
            if over_for > grace:
                self.cut_off()
                return True
            return False
        if len(self.finals) >= max(self.expected, len(self.seen)):
            return True
        if over_for > grace and not self.finish_sent:
            self.finish_sent = True
            self.runner.send_message(FINISH)
        return over_for > grace + GIVE_UP_AFTER

    # ---- worker ----

    def _send_forever(self) -> None:
        while not self.final_sent:
            gevent.sleep(SEND_EVERY)
            self._send(final=self.schedule_over() and len(self.pool) == 0)

    def _send(self, final: bool) -> None:
        if self.final_sent:
            return
        self.final_sent = final
        self.runner.send_message(RECORDS, {"records": self.recorder.take(),
                                           "in_flight": len(self.pool), "final": final})

    def _on_finish(self, environment: Any, msg: Any, **_: Any) -> None:
        self.cut_off()
        self._send(final=True)

    # ---- master ----

    def _on_records(self, environment: Any, msg: Any, **_: Any) -> None:
        self.seen.add(msg.node_id)
        self.recorder.absorb(msg.data["records"], source=msg.node_id)
        if msg.data["final"]:
            self.finals.add(msg.node_id)

    def write(self) -> None:
        """The whole run so far, as one record file (master or lone process)."""
        if self.out is None:
            return
        if self.role == "local":
            self.recorder.sources = {"local": {outcome: self.recorder.total(outcome)
                                               for outcome in SOURCE_TOTALS}}
        self.recorder.write(self.out, RUN_FILE)

    def _write_forever(self) -> None:
        while True:
            gevent.sleep(WRITE_EVERY)
            self.write()

    def progress(self) -> None:
        """One line: elapsed, offered, admitted, refused, p99 so far."""
        print(PROGRESS_PREFIX + progress_line(self.recorder, time.monotonic() - self.started),
              flush=True)

    def _progress_forever(self) -> None:
        while True:
            gevent.sleep(PROGRESS_EVERY)
            self.progress()
