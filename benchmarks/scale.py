"""`gelombang bench scale`: admitted registrations per minute with 1, 2, 4, 8, 16 door processes.

`gelombang serve --processes N` (SO_REUSEPORT: the kernel spreads wrk's
connections over the N processes) against one Redis (AOF, `appendfsync
always`), under a closed-loop wrk load scaled with N (64 connections per
door process, one wrk thread per process up to the load cores). The doors
get half the machine's cores, wrk and Redis the other half; on 2 cores the
doors share core 0 and wrk and Redis core 1, so beyond one process the
figure shows the cost of more processes on one core, not scaling. Process
counts alternate round by round; the figures are medians over the rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import kept_figures, stack
from benchmarks.door import (
    Contender,
    available_cores,
    cpu_seconds,
    exit_on_sigterm,
    redis_flush,
    write_bodies,
    wrk,
)
from benchmarks.harness import (
    BenchRun,
    alternate,
    markdown_table,
    new_figure,
    print_results,
    save_figure,
)
from gelombang.processes import free_port
from gelombang.services import start_redis

GOAL_PER_MINUTE = 2_000_000.0
GOAL_PROCESSES = 16
CONNECTIONS_PER_PROCESS = 64
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


@dataclass(frozen=True)
class ScaleLayout:
    """Cores for the door processes, for wrk and for Redis."""

    doors: tuple[int, ...] | None
    load: tuple[int, ...] | None
    redis: tuple[int, ...] | None

    @classmethod
    def for_cores(cls, cores: Sequence[int]) -> ScaleLayout:
        """Half the cores (at least one) for the doors; the rest for wrk, Redis its own core."""
        if len(cores) < 2:
            return cls(None, None, None)
        half = max(1, len(cores) // 2)
        doors, rest = tuple(cores[:half]), tuple(cores[half:])
        if len(rest) == 1:
            return cls(doors, rest, rest)
        # Redis runs its commands on one thread: one core is all it can use.
        return cls(doors, rest[:-1], rest[-1:])

    def wrk_threads(self, processes: int) -> int:
        """One wrk thread per door process, at most one per load core."""
        return max(1, min(processes, len(self.load) if self.load else 1))


def listening_sockets(port: int, tables: Sequence[str]) -> int:
    """Listening sockets on a port in /proc/net/tcp{,6} texts (one per SO_REUSEPORT process)."""
    count = 0
    for text in tables:
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == LISTEN and \
                    int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def wait_listening(port: int, count: int, timeout: float = 120.0) -> None:
    """Wait until `count` processes listen on the port (all the doors have started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tables = [Path(p).read_text() for p in ("/proc/net/tcp", "/proc/net/tcp6")
                  if Path(p).exists()]
        if listening_sockets(port, tables) >= count:
            return
        time.sleep(0.2)  # start-up only: nothing to wait on but the kernel's table
    raise RuntimeError(f"{count} door processes did not all listen on {port} in {timeout:.0f} s")


def per_minute(accepted_per_second: float) -> float:
    """Admitted registrations per minute from 2xx answers per second."""
    return accepted_per_second * 60.0


@dataclass(frozen=True)
class Plan:
    """How big a run is."""

    rounds: int
    seconds: int
    warmup_seconds: int
    processes: tuple[int, ...]
    bodies: int


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Plan]:
    """The suite's options, and the plan they make (`--tiny` overrides the sizes)."""
    parser = argparse.ArgumentParser(prog="gelombang bench scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="per measured wrk run")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--bodies", type=int, default=20_000)
    parser.add_argument("--appendfsync", choices=["always", "everysec", "no"], default="always",
                        help="Redis durability (the contract's setting is always)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: benchmarks/results/scale-<UTC time>)")
    parser.add_argument("--tiny", action="store_true",
                        help="a few seconds in all: checks the harness, measures nothing")
    args = parser.parse_args(argv)
    if args.tiny:
        return args, Plan(1, 1, 0, (1, 2), 2_000)
    return args, Plan(args.rounds, args.seconds, 2, tuple(args.processes), args.bodies)


def main(argv: list[str] | None = None) -> int:
    """Run the scale suite and write results.json, results.md and the plot."""
    args, plan = parse_args(argv)
    exit_on_sigterm()
    run = BenchRun("scale", args.out, size="tiny" if args.tiny else "full")
    layout = ScaleLayout.for_cores(available_cores())
    run.progress(f"{len(available_cores())} cores: doors on {layout.doors}, wrk on "
                 f"{layout.load}, Redis on {layout.redis}")
    scratch = Path(tempfile.mkdtemp(prefix="gelombang-bench-scale-"))
    bodies = scratch / "bodies.lua"
    write_bodies(bodies, plan.bodies)
    redis = start_redis(scratch / "redis", appendfsync=args.appendfsync,
                        log_file=scratch / "redis.log")
    try:
        stack.pin_family(redis.pid, layout.redis)
        measure(run, plan, layout, scratch, (redis.url, redis.pid), bodies)
    finally:
        redis.stop()
        for log in scratch.glob("*.log"):
            shutil.copy(log, run.folder / log.name)
        shutil.rmtree(scratch, ignore_errors=True)
    return report(run, plan, layout, args.appendfsync)


def measure(run: BenchRun, plan: Plan, layout: ScaleLayout, scratch: Path,
            redis: tuple[str, int], bodies: Path) -> None:
    """Each process count in turn, round after round."""
    redis_url, redis_pid = redis
    port, admin_port = free_port(), free_port()
    config = stack.door_config(scratch / "door.toml", redis_url, port, admin_port,
                               rate_per_second=1e9, burst=1_000_000_000,
                               backlog_high_water=1_000_000_000)
    url = f"http://127.0.0.1:{port}"
    total = plan.rounds * len(plan.processes)
    for step, (number, processes) in enumerate(alternate(plan.processes, plan.rounds), 1):
        run.progress(f"round {number}/{plan.rounds}: {processes} door process(es) "
                     f"({step}/{total})")
        env = {**os.environ, "GELOMBANG_CONFIG": str(config),
               # prometheus-client's multiprocess files, inside the scratch folder.
               "PROMETHEUS_MULTIPROC_DIR": str(scratch / f"metrics-{step}")}
        doors = Contender(f"{processes} processes",
                          [sys.executable, "-m", "gelombang", "serve", "--processes",
                           str(processes)], env, port, cores=layout.doors,
                          log=scratch / "doors.log")
        connections = CONNECTIONS_PER_PROCESS * processes
        threads = layout.wrk_threads(processes)
        with doors:
            assert doors.process is not None
            wait_listening(port, processes)
            if plan.warmup_seconds:
                wrk(url, bodies, connections, plan.warmup_seconds, threads=threads,
                    cores=layout.load)
            cpu_before = cpu_seconds(doors.process.pid)
            redis_before = cpu_seconds(redis_pid)
            found = wrk(url, bodies, connections, plan.seconds, threads=threads,
                        cores=layout.load)
            # Over wrk's own measured time (it loads its body table first).
            door_cpu = (cpu_seconds(doors.process.pid) - cpu_before) / found.seconds
            # Redis is one thread for every door: its CPU per registration bounds
            # what any number of door processes can reach on one Redis.
            redis_seconds = cpu_seconds(redis_pid) - redis_before
        admitted = found.requests - found.non_2xx
        redis_flush(redis_url)
        run.record("door", number, {"processes": processes, "connections": connections,
                                    "wrk_threads": threads},
                   requests_per_minute=per_minute(found.accepted_per_second),
                   accepted_per_second=found.accepted_per_second,
                   requests_per_second=found.requests_per_second,
                   p50_ms=found.p50_ms, p99_ms=found.p99_ms, non_2xx=float(found.non_2xx),
                   socket_errors=float(found.socket_errors), door_cpu=door_cpu,
                   redis_cpu=redis_seconds / found.seconds,
                   redis_us_per_admitted=redis_seconds / admitted * 1e6 if admitted else 0.0)
        run.progress(f"  {per_minute(found.accepted_per_second):,.0f} admitted/min "
                     f"({found.accepted_per_second:,.0f}/s), p99 {found.p99_ms:.1f} ms, "
                     f"non-2xx {found.non_2xx}, doors' CPU {door_cpu:.2f} cores, "
                     f"Redis CPU {redis_seconds / found.seconds:.2f}")


def by_processes(run: BenchRun, counts: Sequence[int]) -> dict[int, dict[str, float]]:
    """Median figures per process count, in the plan's order."""
    medians = run.medians("processes")
    return {count: medians[f"door @ {count}"] for count in counts if f"door @ {count}" in medians}


def table(figures: dict[int, dict[str, float]]) -> str:
    """Process count: admitted per minute, per second, latency, CPU, speed-up over one."""
    one = figures.get(1, {}).get("requests_per_minute")
    rows: list[list[Any]] = []
    for count, found in figures.items():
        speedup = f"{found['requests_per_minute'] / one:.2f} x" if one else ""
        rows.append([count, CONNECTIONS_PER_PROCESS * count, round(found["requests_per_minute"]),
                     round(found["accepted_per_second"]), found["p50_ms"], found["p99_ms"],
                     found["door_cpu"], found.get("redis_us_per_admitted", 0.0), speedup])
    return markdown_table(["door processes", "connections", "admitted/min", "admitted/s",
                           "p50 ms", "p99 ms", "doors' CPU (cores)",
                           "Redis CPU µs/admitted", "vs 1 process"], rows)


def plot(run: BenchRun, figures: dict[int, dict[str, float]]) -> None:
    """Admitted per minute against the process count."""
    figure, axes = new_figure(7.0, 4.0)
    counts = list(figures)
    values = [figures[c]["requests_per_minute"] for c in counts]
    axes.plot(counts, values, marker="o", label="measured (median)")
    axes.set_xscale("log", base=2)
    axes.set_xticks(counts, [str(c) for c in counts])
    axes.set_xlabel("door processes")
    axes.set_ylabel("admitted registrations per minute")
    axes.set_ylim(bottom=0)
    axes.set_title(f"scale suite ({stack.cores()} cores; goal {GOAL_PER_MINUTE:,.0f}/min "
                   f"at {GOAL_PROCESSES})", fontsize=9)
    axes.yaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
    axes.legend()
    save_figure(figure, run.plot_path("scale-requests-per-minute"))


def report(run: BenchRun, plan: Plan, layout: ScaleLayout, appendfsync: str) -> int:
    """Target, table, plot, results.json and results.md."""
    figures = by_processes(run, plan.processes)
    largest = max(figures)
    # The goal is set at 16 processes; a run without 16 (--tiny) reports its largest.
    run.target(f"admitted registrations per minute at {largest} processes",
               figures[largest]["requests_per_minute"], GOAL_PER_MINUTE, "higher", "/min")
    plot(run, figures)
    notes = [f"wrk: {CONNECTIONS_PER_PROCESS} connections per door process, one thread per "
             f"process up to {len(layout.load) if layout.load else 1} load core(s); "
             f"{plan.seconds} s per run after a {plan.warmup_seconds} s warm-up; Redis "
             f"appendfsync {appendfsync}; the bucket set far above the load (every request "
             "admitted). Doors on cores "
             f"{layout.doors}, wrk on {layout.load}, Redis on {layout.redis}."]
    folder = run.finish({str(count): found for count, found in figures.items()}, table(figures),
                        notes=notes, figures=kept_figures.scale(figures),
                        parameters={"rounds": plan.rounds, "seconds": plan.seconds,
                                    "processes": list(plan.processes), "bodies": plan.bodies,
                                    "appendfsync": appendfsync,
                                    "door_cores": layout.doors, "load_cores": layout.load,
                                    "redis_cores": layout.redis})
    return print_results(folder)


if __name__ == "__main__":
    sys.exit(main())
