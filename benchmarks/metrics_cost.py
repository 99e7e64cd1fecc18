"""The door's metrics per request: a prometheus-client call per event against local counts.

    python -m benchmarks.metrics_cost

A micro benchmark (timeit, a few CPU seconds). One request's metrics are what
the door records for a 202: its latency by route and status, and its
admission round trip (group size, Redis time, the decision), either a round
trip of its own (a quiet door) or a 32nd of one (a busy door, groups of 32).
"calls" is the door's code from before intake/metrics.py counted locally (a
prometheus-client call per event, on the same series); "local" goes through
intake/metrics.py as the door does now, flushing once every 1,000 requests
(the door flushes once a second, so at a few thousand requests a second
this overstates the flush). Each is measured in a fresh interpreter without
and with PROMETHEUS_MULTIPROC_DIR (`gelombang serve` always sets it: every
value then lives in a memory-mapped file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable

# prometheus-client picks where values live when imported: `--measure` runs in
# a fresh interpreter whose environment says which.
from prometheus_client import Histogram

from intake import metrics
from queueing.admission import Decision, Outcome
from queueing.grouping import GroupStats

REQUESTS = 20_000
REPEATS = 5
GROUP = 32
FLUSH_EVERY = 1_000


class _Calls:
    """The door's two functions as they were (git show 61f72c1:intake/metrics.py),
    on the same Prometheus series."""

    def __init__(self) -> None:
        self.children: dict[tuple[str, int], Histogram] = {}
        self.decided = {Outcome.ADMITTED: metrics.DECISIONS.labels("admitted")}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        child = self.children.get((route, status))
        if child is None:
            child = metrics.REQUEST_SECONDS.labels(route, str(status))
            self.children[(route, status)] = child
        child.observe(seconds)

    def observe_group(self, stats: GroupStats) -> None:
        metrics.GROUP_SIZE.observe(stats.size)
        metrics.REDIS_SECONDS.observe(stats.seconds)
        counts: dict[Outcome, int] = {}
        for decision in stats.decisions or []:
            counts[decision.outcome] = counts.get(decision.outcome, 0) + 1
        for outcome, count in counts.items():
            self.decided[outcome].inc(count)


def _calls(stats: GroupStats, group: int) -> Callable[[], None]:
    door = _Calls()

    def run() -> None:
        for number in range(REQUESTS):
            door.observe_request("registrations.create", 202, 0.0012)
            if number % group == 0:
                door.observe_group(stats)
    return run


def _local(stats: GroupStats, group: int) -> Callable[[], None]:
    timer = metrics.RequestTimer()

    def run() -> None:
        for number in range(REQUESTS):
            timer.observe("registrations.create", 202, 0.0012)
            if number % group == 0:
                metrics.observe_group(stats)
            if number % FLUSH_EVERY == 0:
                metrics.flush()
    return run


def _workloads() -> dict[str, Callable[[], None]]:
    """Name → one batch of REQUESTS requests' metrics."""
    quiet = GroupStats(size=1, seconds=0.0004, decisions=[Decision(Outcome.ADMITTED)])
    busy = GroupStats(size=GROUP, seconds=0.0009,
                      decisions=[Decision(Outcome.ADMITTED) for _ in range(GROUP)])
    return {"calls, quiet": _calls(quiet, 1), "local, quiet": _local(quiet, 1),
            "calls, busy": _calls(busy, GROUP), "local, busy": _local(busy, GROUP)}


def measure() -> dict[str, float]:
    """Microseconds per request of each workload, best of REPEATS."""
    return {name: min(timeit.repeat(run, number=1, repeat=REPEATS)) / REQUESTS * 1e6
            for name, run in _workloads().items()}


def main(argv: list[str] | None = None) -> int:
    """Measure in two fresh interpreters (multiprocess mode is chosen at import)."""
    if argv == ["--measure"] or sys.argv[1:] == ["--measure"]:
        print(json.dumps(measure()))
        return 0
    with tempfile.TemporaryDirectory(prefix="gelombang-metrics-cost-") as folder:
        for mode, extra in (("one process", {}), ("multiprocess", {"PROMETHEUS_MULTIPROC_DIR":
                                                                    folder})):
            env = {key: value for key, value in os.environ.items()
                   if key != "PROMETHEUS_MULTIPROC_DIR"} | extra
            out = subprocess.run([sys.executable, "-m", "benchmarks.metrics_cost", "--measure"],
                                 env=env, capture_output=True, text=True, check=True).stdout
            figures = json.loads(out)
            for load in ("quiet", "busy"):
                old, new = figures[f"calls, {load}"], figures[f"local, {load}"]
                print(f"{mode:<13} {load:<6} calls {old:6.2f} µs  local {new:6.2f} µs"
                      f"  ({old / new:4.1f} x less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
