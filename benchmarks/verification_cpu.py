"""What verification costs per registration, process by process, behind a stored backlog.

    python -m benchmarks verification-cpu [--count 30000] [--nik-capacity 1500]
                                          [--email-rate 10000]

The same deployed processes as the verification suite (scratch Redis with
AOF always, PostgreSQL with fsync, `mail-sink`, `nik-sim`, `worker store`,
`worker email`, `worker nik`, one config). The email and NIK workers start,
connect, and are then paused (SIGSTOP) while the whole wave is stored; so
when they are let go (SIGCONT) Redis and PostgreSQL do verification work
only, and the CPU time each process spends until the last NIK is checked
(read from /proc: Redis, PostgreSQL's postmaster and backends, each
worker) is verification's, nothing else's. Reported per registration, with
the sandboxes' (mail sink, simulator) apart: they stand for the relay and
the ministry. Also: emails and NIK checks per second in that phase, and the
most PostgreSQL connections each worker held (pg_stat_activity, by
application_name, sampled every 0.2 s).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import redis

from benchmarks import cpu, kept_figures, streams
from benchmarks.verification import (
    add_wave_options,
    progress,
    run_and_report,
    sim_stats,
    verification_stack,
)

CONNECTIONS_SQL = """
SELECT application_name, count(*) FROM pg_stat_activity
 WHERE application_name LIKE 'gelombang-%' GROUP BY 1
"""
# Progress from the funnel's counters (a few rows), on one connection: a
# count over the registrations, or a new connection per look, cost
# PostgreSQL as much as a third of what is measured.
FUNNEL_SQL = """
SELECT coalesce(sum(value) FILTER (WHERE name = 'email_sent'), 0),
       coalesce(sum(value) FILTER (WHERE name IN ('nik_verified', 'nik_rejected')), 0)
  FROM funnel_counts
"""
POLL_SECONDS = 0.5
FIGURES_MIN_COUNT = 10_000


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks verification-cpu")
    add_wave_options(parser)
    parser.set_defaults(count=30_000, nik_capacity=1500.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--roles", default="email,nik",
                        help="the verifiers let go (the others stay paused): email, nik or both")
    args = parser.parse_args(argv)
    args.roles = [role for role in args.roles.split(",") if role]
    if not args.roles or set(args.roles) - {"email", "nik"}:
        parser.error("--roles: email, nik, or email,nik")
    return args


def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    with verification_stack(args, scratch) as running:
        settings, processes = running.settings, running.processes
        time.sleep(3.0)  # connected, groups made, leases taken
        for role in ("email", "nik"):
            processes[role].send_signal(signal.SIGSTOP)
        client = redis.Redis.from_url(running.redis.url)
        streams.enqueue(client, running.payloads, settings.queue.partitions)
        wait_for(running.postgres.dsn, 0, args.count, args.timeout)
        commands_before = client.info("commandstats")
        phase = measure(processes, running.redis.pid, running.postgres.pid,
                        running.postgres.dsn, args)
        phase["redis_calls"] = calls_between(commands_before, client.info("commandstats"))
        stats = sim_stats(settings)
    codes = running.exit_codes
    return {**phase, "count": args.count, "nik_capacity": args.nik_capacity,
            "email_rate_limit": args.email_rate, "simulator": stats, "exit_codes": codes}


def calls_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Redis commands run between two INFO commandstats, by command, most first."""
    calls = {name.removeprefix("cmdstat_"): int(stats["calls"]) - int(
        before.get(name, {}).get("calls", 0)) for name, stats in after.items()}
    return dict(sorted(((k, v) for k, v in calls.items() if v), key=lambda kv: -kv[1]))


def wait_for(dsn: str, column: int, count: int, timeout: float) -> float:
    """Seconds until the progress column reaches `count`."""
    started = time.monotonic()
    while asyncio.run(progress(dsn))[column] < count:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not done within {timeout} s")
        time.sleep(0.2)
    return time.monotonic() - started


def measure(processes: dict[str, subprocess.Popen[bytes]], redis_pid: int, postgres_pid: int,
            dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    """Let the verifiers go; CPU seconds per process until every check is done."""
    return asyncio.run(_measure(processes, redis_pid, postgres_pid, dsn, args))


async def _measure(processes: dict[str, subprocess.Popen[bytes]], redis_pid: int,
                   postgres_pid: int, dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    pids = {"redis": redis_pid, "postgres": postgres_pid,
            **{name: process.pid for name, process in processes.items()}}
    connection = await asyncpg.connect(dsn)
    try:
        before = cpu.processes()
        started = time.monotonic()
        for role in args.roles:
            processes[role].send_signal(signal.SIGCONT)
        most_connections: dict[str, int] = {}
        done_at: dict[str, float] = {}
        timeline: list[tuple[float, int, int]] = []
        while len(done_at) < len(args.roles):
            await asyncio.sleep(POLL_SECONDS)
            row = await connection.fetchrow(FUNNEL_SQL)
            assert row is not None
            elapsed = time.monotonic() - started
            timeline.append((elapsed, int(row[0]), int(row[1])))
            for value, name in zip(row, ("email", "nik"), strict=True):
                if value >= args.count and name not in done_at:
                    done_at[name] = elapsed
            for row in await connection.fetch(CONNECTIONS_SQL):
                most_connections[row[0]] = max(most_connections.get(row[0], 0), int(row[1]))
            if elapsed > args.timeout:
                raise RuntimeError(f"not verified within {args.timeout} s")
        after = cpu.processes()
    finally:
        await connection.close()
    seconds = {name: cpu.family_seconds(after, pid) - cpu.family_seconds(before, pid)
               for name, pid in pids.items()}
    per_registration = {name: value / args.count * 1e6 for name, value in seconds.items()}
    verification = sum(per_registration[name]
                       for name in ("postgres", "redis", *args.roles))
    return {"cpu_seconds": seconds, "cpu_us_per_registration": per_registration,
            "roles": args.roles, "verification_us_per_registration": verification,
            "per_s": {name: args.count / done_at[name] for name in done_at},
            "steady_per_s": {name: steady_rate(timeline, column, args.count)
                             for column, name in ((1, "email"), (2, "nik"))
                             if name in done_at},
            "phase_seconds": max(done_at.values()),
            "most_pg_connections": most_connections}


def steady_rate(timeline: list[tuple[float, int, int]], column: int, total: int
                ) -> float | None:
    """Jobs per second between 10 % and 90 % of the total done: the pace once going,
    without the start (first batches loading) and the tail (the slowest answers)."""
    low = next((point for point in timeline if point[column] >= total * 0.1), None)
    high = next((point for point in timeline if point[column] >= total * 0.9), None)
    if low is None or high is None or high[0] <= low[0]:
        return None
    return (high[column] - low[column]) / (high[0] - low[0])


def markdown(results: dict[str, Any]) -> str:
    us = results["cpu_us_per_registration"]
    rows = [f"| {name} | {us[name]:,.0f} |" for name in
            (*results["roles"], "postgres", "redis", "mail-sink", "nik-sim", "store")]
    rates = ", ".join(f"{name} {rate:,.0f}/s (steady {results['steady_per_s'][name] or 0:,.0f}/s)"
                      for name, rate in results["per_s"].items())
    return "\n".join([
        f"## verification CPU: {results['count']:,} stored registrations, then verified",
        "",
        "| process | µs of CPU per registration |",
        "| --- | ---: |",
        *rows,
        f"| **verification ({' + '.join(results['roles'])} + PostgreSQL + Redis)** | "
        f"**{results['verification_us_per_registration']:,.0f}** |",
        "",
        f"{rates} (simulator at {results['nik_capacity']:.0f}/s); most PostgreSQL connections: "
        f"{results['most_pg_connections']}; simulator: {results['simulator'].get('statuses')}",
        "",
        f"Redis commands in the phase: {results['redis_calls']}",
        "",
    ])


def kept(results: dict[str, Any]) -> dict[str, float]:
    """The figures `gelombang plan` reads; none from a small run.

    /proc counts CPU in 10 ms ticks: below FIGURES_MIN_COUNT registrations a
    tick is over 1 µs per registration, and the harness's own test runs 300.
    """
    return kept_figures.verification_cpu(results) if results["count"] >= FIGURES_MIN_COUNT \
        else {}


def main(argv: list[str] | None = None) -> int:
    return run_and_report("verification-cpu", parse(argv), run, markdown, kept)
