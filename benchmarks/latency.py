"""Latency suite: open-loop arrivals against one door process; p50/p99/p99.9 of 202s.

    python -m benchmarks latency [--out DIR] [--tiny] [--rates 1333,4000] [--seconds 15]
                                 [--rounds 3] [--knee-min 1000] [--knee-max 6000] ...

One door process (`python -m intake.process`: validation, sealing, admission,
the append to Redis) is pinned to core 0; the open-loop generator
(benchmarks/openloop.py, its own process) and Redis (AOF, `appendfsync
always`) to core 1. The bucket is far above the offered load, so every
request is admitted: what is measured is the door's answer time, not the
limiter's. Requests arrive at a fixed rate whatever the door does and each
latency runs from the time the request was due, so the queue an overloaded
door builds is in the figures (a closed-loop client such as wrk would slow
down with the door and hide it).

First the knee: the highest rate at which the door still answers every
request, all 202, with p99 at most `--knee-p99-ms`, found by bisection
between `--knee-min` and `--knee-max`. Then `--rounds` rounds alternating
the given rates and the knee (A B C A B C …); the figures are medians over
the rounds. Redis is emptied after every run.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks import openloop, stack
from benchmarks.door import redis_flush
from benchmarks.harness import (
    BenchRun,
    alternate,
    markdown_table,
    new_figure,
    print_results,
    save_figure,
)
from gelombang.processes import free_port, stop_process
from gelombang.services import start_redis
from loadtest.registrants import RegistrantFactory

PATH = "/v1/registrations"
TARGET_RATE, TARGET_P99_MS = 1333.0, 10.0


@dataclass(frozen=True)
class Plan:
    """The suite's sizes (`--tiny` shrinks them all)."""

    rates: list[float]
    target_rate: float
    seconds: float
    rounds: int
    warmup_seconds: float
    knee: bool
    knee_min: float
    knee_max: float
    knee_resolution: float
    knee_seconds: float
    knee_p99_ms: float
    max_connections: int
    drain_timeout: float
    bodies: int


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Plan]:
    """The options, and the plan they make."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--tiny", action="store_true",
                        help="a few seconds at tiny rates, 1 round: checks the harness only")
    parser.add_argument("--rates", default="1333,4000",
                        help="offered rates (requests/s), comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--no-knee", action="store_true", help="skip the knee search")
    parser.add_argument("--knee-min", type=float, default=1000.0)
    parser.add_argument("--knee-max", type=float, default=6000.0)
    parser.add_argument("--knee-resolution", type=float, default=100.0)
    parser.add_argument("--knee-seconds", type=float, default=8.0)
    parser.add_argument("--knee-p99-ms", type=float, default=100.0,
                        help="a rate is past the knee when p99 of all answers exceeds this")
    parser.add_argument("--max-connections", type=int, default=1000)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--appendfsync", choices=["always", "everysec", "no"], default="always",
                        help="Redis durability (the contract's setting is always)")
    parser.add_argument("--generator-check", metavar="RATES", default=None,
                        help="instead of the suite: what the generator sustains against the "
                             "plain aiohttp baseline at these rates (comma-separated)")
    args = parser.parse_args(argv)
    rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]
    if args.tiny:
        return args, Plan(rates=[50.0, 100.0], target_rate=50.0, seconds=1.0, rounds=1,
                          warmup_seconds=0.5, knee=not args.no_knee, knee_min=50.0,
                          knee_max=150.0, knee_resolution=100.0, knee_seconds=0.5,
                          knee_p99_ms=args.knee_p99_ms, max_connections=50,
                          drain_timeout=5.0, bodies=200)
    target = TARGET_RATE if TARGET_RATE in rates else rates[0]
    return args, Plan(rates=rates, target_rate=target, seconds=args.seconds, rounds=args.rounds,
                      warmup_seconds=args.warmup_seconds, knee=not args.no_knee,
                      knee_min=args.knee_min, knee_max=args.knee_max,
                      knee_resolution=args.knee_resolution, knee_seconds=args.knee_seconds,
                      knee_p99_ms=args.knee_p99_ms, max_connections=args.max_connections,
                      drain_timeout=args.drain_timeout, bodies=20_000)


def make_bodies(count: int) -> list[bytes]:
    """Distinct valid registrations (as benchmarks/door.py makes them for wrk)."""
    factory = RegistrantFactory(seed=7)
    return [orjson.dumps(factory.make().body()) for _ in range(count)]


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    """The running stack (Redis, one door) and one open-loop run against it."""

    def __init__(self, plan: Plan, scratch: Path, appendfsync: Any) -> None:
        self.plan, self.scratch = plan, scratch
        two = stack.cores() >= 2
        # Door alone on core 0; the generator and Redis share core 1 (Redis is
        # mostly waiting on fsync; the generator uses a fraction of a core).
        self.server_core: int | None = 0 if two else None
        self.load_core: int | None = 1 if two else None
        self.bodies = make_bodies(plan.bodies)
        self.redis = start_redis(scratch / "redis", appendfsync=appendfsync,
                                 log_file=scratch / "redis.log")
        stack.pin_family(self.redis.pid, self.load_core)
        self.port = free_port()
        config = stack.door_config(scratch / "door.toml", self.redis.url, self.port, free_port(),
                                   rate_per_second=1e9, burst=1_000_000_000,
                                   backlog_high_water=1_000_000_000)
        self.door = subprocess.Popen(
            stack.pinned([sys.executable, "-m", "intake.process"], self.server_core),
            env={**os.environ, "GELOMBANG_CONFIG": str(config)}, cwd=stack.REPO_ROOT,
            start_new_session=True)  # its own group, which stop_process kills if it must
        stack.wait_http(f"http://127.0.0.1:{self.port}{PATH}")

    def measure(self, rate: float, seconds: float) -> tuple[openloop.OpenLoopResult, float]:
        """One open-loop run; the door's share of a core over it."""
        cpu_before = process_cpu_seconds(self.door.pid)
        result = openloop.run_in_process(
            "127.0.0.1", self.port, PATH, self.bodies, rate, seconds, core=self.load_core,
            max_connections=self.plan.max_connections, drain_timeout=self.plan.drain_timeout,
            preconnect=16, scratch=self.scratch)
        door_cpu = (process_cpu_seconds(self.door.pid) - cpu_before) / max(result.wall_s, 1e-9)
        self.flush()
        return result, door_cpu

    def flush(self) -> None:
        """Empty Redis so every run starts alike (and memory stays small)."""
        redis_flush(self.redis.url)

    def close(self) -> None:
        """Stop the door, then Redis."""
        stop_process(self.door.pid, signal.SIGTERM, 30.0, self.door)
        self.redis.stop()


def figures(result: openloop.OpenLoopResult, door_cpu: float) -> dict[str, float]:
    """A run's figures by name (a percentile with nothing to measure is left out)."""
    statuses = result.statuses
    found = {
        "offered": float(result.offered), "completed": float(result.completed),
        "completed_ratio": result.completed_ratio,
        "accepted": float(statuses.get(202, 0)), "status_429": float(statuses.get(429, 0)),
        "status_503": float(statuses.get(503, 0)),
        "status_other": float(sum(n for s, n in statuses.items() if s not in (202, 429, 503))),
        "errors": float(result.errors), "unfinished": float(result.unfinished),
        "max_send_lag_ms": result.max_send_lag_ms, "send_lag_p99_ms": result.send_lag_p99_ms,
        "connections": float(result.connections_opened),
        "generator_cpu": result.cpu_s / max(result.wall_s, 1e-9), "door_cpu": door_cpu,
        "p50_ms": result.percentile(50), "p99_ms": result.percentile(99),
        "p999_ms": result.percentile(99.9), "max_ms": result.percentile(100),
        "p99_all_ms": result.percentile(99, accepted_only=False),
    }
    return {name: value for name, value in found.items() if not math.isnan(value)}


def keeps_up(found: dict[str, float], p99_limit_ms: float) -> bool:
    """The door answered every request, all 202, with p99 (of all answers) within the limit."""
    return (found["completed"] == found["offered"] and found["accepted"] == found["offered"]
            and found.get("p99_all_ms", math.inf) <= p99_limit_ms)


def find_knee(run: BenchRun, bench: Bench, plan: Plan) -> tuple[float | None, str]:
    """Bisect for the highest rate the door keeps up with; (rate or None, how it ended)."""
    verdicts: dict[float, bool] = {}

    def probe(rate: float) -> bool:
        result, door_cpu = bench.measure(rate, plan.knee_seconds)
        found = figures(result, door_cpu)
        ok = keeps_up(found, plan.knee_p99_ms)
        # All probes count as round 1: the search is done once, before the rounds.
        run.record("knee search", 1, {"rate": rate, "kind": "knee", "probe": len(verdicts) + 1,
                                      "keeps_up": ok}, **found)
        run.progress(f"knee probe {rate:,.0f}/s: p99 {found.get('p99_all_ms', math.nan):.1f} ms, "
                     f"completed {found['completed_ratio']:.3f}, generator lag p99 "
                     f"{found['send_lag_p99_ms']:.1f} ms -> "
                     f"{'keeps up' if ok else 'past the knee'}")
        verdicts[rate] = ok
        return ok

    low, high = plan.knee_min, plan.knee_max
    if not probe(low):
        return None, f"below {low:,.0f}/s (the lowest rate probed)"
    if probe(high):
        return high, f"at least {high:,.0f}/s (the highest rate probed)"
    while high - low > plan.knee_resolution:
        middle = round((low + high) / 2 / 50) * 50 or (low + high) / 2
        if middle in (low, high):
            break
        if probe(middle):
            low = middle
        else:
            high = middle
    return low, f"{low:,.0f}/s (p99 past {plan.knee_p99_ms:g} ms or answers behind at " \
                f"{high:,.0f}/s)"


def generator_check(rates: list[float], seconds: float) -> int:
    """The generator (core 1) against plain aiohttp (core 0): does it keep its schedule?"""
    two = stack.cores() >= 2
    port = free_port()
    server = subprocess.Popen(stack.pinned([sys.executable, "-m",
                                            "benchmarks.baselines.plain_aiohttp", str(port)],
                                           0 if two else None), cwd=stack.REPO_ROOT)
    rows = []
    try:
        stack.wait_http(f"http://127.0.0.1:{port}{PATH}")
        bodies = make_bodies(2_000)
        for rate in rates:
            result = openloop.run_in_process("127.0.0.1", port, PATH, bodies, rate, seconds,
                                             core=1 if two else None, preconnect=16)
            rows.append([label(rate), result.completed_ratio, result.send_lag_p99_ms,
                         result.max_send_lag_ms, result.cpu_s / max(result.wall_s, 1e-9),
                         result.cpu_s / max(result.completed, 1) * 1e6,
                         result.percentile(50), result.percentile(99),
                         result.connections_opened])
    finally:
        server.terminate()
        server.wait(30)
    print(markdown_table(["offered", "completed/offered", "gen lag p99 ms", "gen lag max ms",
                          "generator CPU", "generator µs/request", "p50 ms", "p99 ms",
                          "connections"], rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the latency suite; results.json, results.md and a plot in the run's folder."""
    args, plan = parse(argv)
    if args.generator_check:
        return generator_check([float(r) for r in args.generator_check.split(",")],
                               plan.seconds)
    run = BenchRun("latency", args.out, size="tiny" if args.tiny else "full")
    scratch = Path(tempfile.mkdtemp(prefix="gelombang-latency-"))
    run.progress(f"starting Redis (appendfsync {args.appendfsync}) and one door process")
    bench = Bench(plan, scratch, args.appendfsync)
    knee: float | None = None
    knee_text = "not searched (--no-knee)"
    try:
        bench.measure(plan.rates[0], plan.warmup_seconds)  # warm-up, not recorded
        if plan.knee:
            knee, knee_text = find_knee(run, bench, plan)
            run.progress(f"knee: {knee_text}")
        contenders = list(dict.fromkeys([*plan.rates, *([knee] if knee else [])]))
        for number, rate in alternate(contenders, plan.rounds):
            result, door_cpu = bench.measure(rate, plan.seconds)
            found = figures(result, door_cpu)
            run.record(label(rate), number, {"rate": rate, "kind": "round"}, **found)
            run.progress(f"round {number}/{plan.rounds} at {rate:,.0f}/s: p50 "
                         f"{found.get('p50_ms', math.nan):.2f} ms, p99 "
                         f"{found.get('p99_ms', math.nan):.2f} ms, p99.9 "
                         f"{found.get('p999_ms', math.nan):.2f} ms, completed "
                         f"{found['completed_ratio']:.3f}, generator lag p99 "
                         f"{found['send_lag_p99_ms']:.2f} ms")
    finally:
        bench.close()
    return report(run, plan, contenders, knee, knee_text, args.appendfsync)


def label(rate: float) -> str:
    """A contender's name: its offered rate."""
    return f"{rate:,.0f}/s"


def report(run: BenchRun, plan: Plan, rates: list[float], knee: float | None, knee_text: str,
           appendfsync: str) -> int:
    """Table, target, plot and results; exit status 0 (a missed target is a figure)."""
    medians = run.medians()
    rows = []
    for rate in rates:
        m = medians[label(rate)]
        rows.append([label(rate) + (" (knee)" if rate == knee else ""),
                     m.get("p50_ms", math.nan), m.get("p99_ms", math.nan),
                     m.get("p999_ms", math.nan), m.get("max_ms", math.nan),
                     f"{m['completed_ratio']:.3f}", int(m["accepted"]),
                     f"{int(m['status_429'])}/{int(m['status_503'])}/{int(m['status_other'])}",
                     f"{int(m['errors'])}/{int(m['unfinished'])}",
                     m["send_lag_p99_ms"], m["max_send_lag_ms"], int(m["connections"]),
                     m["door_cpu"]])
    table = markdown_table(
        ["offered", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "completed/offered", "202s",
         "429/503/other", "errors/unfinished", "gen lag p99 ms", "gen lag max ms",
         "connections", "door CPU"], rows)
    knee_rows = [[f"{m.settings['rate']:,.0f}/s", m.figures.get("p99_all_ms", math.nan),
                  f"{m.figures['completed_ratio']:.3f}", m.figures["send_lag_p99_ms"],
                  "keeps up" if m.settings["keeps_up"] else "past the knee"]
                 for m in run.measurements if m.settings.get("kind") == "knee"]
    if knee_rows:
        table += (f"\nKnee search ({plan.knee_seconds:g} s per probe; past the knee: an "
                  f"answer missing, a non-202, or p99 of all answers over "
                  f"{plan.knee_p99_ms:g} ms): **{knee_text}**.\n\n")
        table += markdown_table(["offered", "p99 ms (all)", "completed/offered",
                                 "gen lag p99 ms", "verdict"], knee_rows)
    target_p99 = medians[label(plan.target_rate)].get("p99_ms", math.inf)
    run.target(f"p99 of 202s at {plan.target_rate:,.0f}/s", target_p99, TARGET_P99_MS, "lower",
               " ms")
    plot(run, rates, knee, medians)
    lagging = [label(rate) for rate in rates
               if medians[label(rate)]["send_lag_p99_ms"] > TARGET_P99_MS / 2]
    notes = [f"Open loop: request i due at start + i/rate, latency from its due time to the "
             f"last byte of its answer (coordinated omission avoided); "
             f"{plan.seconds:g} s per run, up to {plan.max_connections} connections, "
             f"Redis appendfsync {appendfsync}, bucket far above the offered load.",
             "gen lag: how late the generator itself sent (it is inside the latencies); "
             "door CPU: the door process's share of its core."]
    if lagging:
        notes.append(f"**The generator lagged** (p99 of its send lag over "
                     f"{TARGET_P99_MS / 2:g} ms) at {', '.join(lagging)}: those figures "
                     f"include its own delay and should be rejected or rerun.")
    summary = {label(rate): medians[label(rate)] for rate in rates}
    summary["knee"] = {"rate": knee, "text": knee_text}  # type: ignore[dict-item]
    folder = run.finish(summary, table, parameters={
        "rates": plan.rates, "seconds": plan.seconds, "rounds": plan.rounds,
        "knee_min": plan.knee_min, "knee_max": plan.knee_max,
        "knee_resolution": plan.knee_resolution, "knee_seconds": plan.knee_seconds,
        "knee_p99_ms": plan.knee_p99_ms, "max_connections": plan.max_connections,
        "appendfsync": appendfsync, "door_core": 0, "generator_and_redis_core": 1},
        notes=notes)
    return print_results(folder)


def plot(run: BenchRun, rates: list[float], knee: float | None,
         medians: dict[str, dict[str, float]]) -> None:
    """Latency percentiles of 202s against offered rate, log scale."""
    figure, axes = new_figure()
    ordered = sorted(rates)
    for key, name, style in (("p50_ms", "p50", "o-"), ("p99_ms", "p99", "s-"),
                             ("p999_ms", "p99.9", "^-")):
        points = [(rate, medians[label(rate)][key]) for rate in ordered
                  if key in medians[label(rate)]]
        if points:
            axes.plot([p[0] for p in points], [p[1] for p in points], style, label=name)
    probes = [(m.settings["rate"], m.figures["p99_all_ms"]) for m in run.measurements
              if m.settings.get("kind") == "knee" and "p99_all_ms" in m.figures]
    if probes:
        axes.plot([p[0] for p in probes], [p[1] for p in probes], "x", color="grey",
                  label="knee probes (p99, all answers)")
    axes.axhline(TARGET_P99_MS, color="red", linestyle="--", linewidth=1,
                 label=f"target p99 {TARGET_P99_MS:g} ms")
    if knee:
        axes.axvline(knee, color="grey", linestyle=":", linewidth=1, label="knee")
    axes.set_yscale("log")
    axes.set_xlabel("offered rate (requests/s, open loop)")
    axes.set_ylabel("latency of 202s from due time (ms)")
    axes.set_title("One door process: latency against offered rate")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    save_figure(figure, run.plot_path("latency"))


if __name__ == "__main__":
    sys.exit(main())
