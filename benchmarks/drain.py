"""Drain benchmark: the idempotent drain against a raw COPY of the same rows, same run.

N registrations are made through the real envelope (validated, sealed, hashed;
about 2 % reuse an earlier NIK). Phase A, the ceiling: a raw COPY of exactly
the rows the drain would write, in batches of the same size, into the same
table with the same indexes. Then the tables are emptied, the envelopes are
appended to the partition streams as the door appends them, and phase B runs
`gelombang worker store` processes until every stream is empty and nothing is
pending. Phase C, the floor: the same entries queued again, read, handed off
and acknowledged with no PostgreSQL at all (benchmarks/stream_floor.py); its
CPU per registration added to the COPY's bounds the ratio any drain of these
streams can reach here. Scratch Redis (AOF) and PostgreSQL (fsync on) are
started for the run.

    python -m benchmarks drain [--count 1000000] [--rounds 1] [--envelopes FILE]
                               [--out DIR] [--tiny] [options below]

`--rounds N` repeats both phases N times in turn (COPY, drain, COPY, drain,
the tables and Redis emptied between rounds), so drift on a noisy machine
hits both. It defaults to 1: a round of 1,000,000 takes 3 to 4 minutes here
(on top of ~110 s to make the envelopes, or a few seconds to read them back
with `--envelopes`), so three would take a quarter of an hour. `--tiny`
(2,000 registrations) checks the harness and measures nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from benchmarks import (
    cpu,
    database,
    harness,
    kept_figures,
    profiles,
    stack,
    stream_floor,
    streams,
    workload,
)
from benchmarks.drain_report import markdown, plot, rounds_table
from config.settings import Settings
from database.schema import migrate
from gelombang.devstate import render_toml
from gelombang.services import PostgresServer, RedisServer, start_postgres, start_redis
from queueing.envelope import Envelope
from workers.drain.handoff import KINDS

TINY_COUNT = 2_000
# The goal: the drain at 0.6 x the raw COPY ceiling, or better.
RATIO_GOAL = 0.6


@dataclass
class Phase:
    """One timed phase: rows written, wall time, and CPU seconds by process group."""

    name: str
    rows: int
    seconds: float
    kind: str = "copy"  # copy (the ceiling), drain, or floor (phase C)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    machine_busy_share: float = 0.0
    # Processes outside the benchmark that used the most CPU meanwhile (seconds).
    busiest_others: list[tuple[str, float]] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        """Rows written per wall-clock second."""
        return self.rows / self.seconds

    def cpu_per_row(self) -> float:
        """CPU seconds per row of the measured processes (the client's, PostgreSQL's, Redis's)."""
        return sum(seconds for group, seconds in self.cpu_seconds.items()
                   if group != "other") / self.rows


class Meter:
    """CPU seconds spent by each process group between start() and stop()."""

    def __init__(self, postgres: PostgresServer, redis_server: RedisServer) -> None:
        self.postgres, self.redis = postgres, redis_server
        self.workers: list[int] = []
        self._before: dict[int, cpu.Process] = {}
        self._machine = cpu.MachineTimes.now()

    def start(self) -> None:
        """Take the starting readings."""
        self._before, self._machine = cpu.processes(), cpu.MachineTimes.now()

    def _groups(self, snapshot: dict[int, cpu.Process]) -> dict[str, float]:
        return {"benchmark": snapshot[os.getpid()].seconds,
                "workers": sum(snapshot[pid].seconds for pid in self.workers if pid in snapshot),
                "postgres": cpu.family_seconds(snapshot, self.postgres.pid),
                "redis": cpu.family_seconds(snapshot, self.redis.pid)}

    def stop(self, phase: Phase) -> Phase:
        """Fill the phase's CPU figures; `other` is everything else on the machine.

        Call it while the measured processes live: a backend that has exited but
        is not yet reaped would drop out of the count.
        """
        after, now = cpu.processes(), cpu.MachineTimes.now()
        busy, share = now.busy_since(self._machine)
        before = self._groups(self._before)
        phase.cpu_seconds = {name: value - before[name]
                             for name, value in self._groups(after).items()}
        phase.cpu_seconds["other"] = busy - sum(phase.cpu_seconds.values())
        phase.machine_busy_share = share
        ours = ({os.getpid(), *self.workers} | cpu.family(after, self.postgres.pid)
                | cpu.family(after, self.redis.pid))
        others = {f"{process.name} ({pid})": process.seconds - (
                      self._before[pid].seconds if pid in self._before else 0.0)
                  for pid, process in after.items() if pid not in ours}
        phase.busiest_others = sorted(others.items(), key=lambda item: -item[1])[:3]
        return phase


def worker_config(path: Path, redis_url: str, dsn: str, batch_size: int) -> Path:
    """A worker config: the scratch Redis and PostgreSQL, fresh keys, the batch size."""
    base = Settings.load().model_dump(mode="json")
    base["keys"].update(stack.fresh_keys())
    base["redis"]["url"] = redis_url
    base["postgres"]["dsn"] = dsn
    base["drain"]["batch_size"] = batch_size
    path.write_text(render_toml(base))
    return path


def start_worker(config: Path, log: Path, concurrency: int | None) -> subprocess.Popen[bytes]:
    """`gelombang worker store`, as deployed, writing its log to a file."""
    command = [sys.executable, "-m", "gelombang", "worker", "store"]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    env = {**os.environ, "GELOMBANG_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=stack.REPO_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


@dataclass
class DrainRun:
    """Phase B: the drain's figures, and how its processes ended."""

    phase: Phase
    first_ack_seconds: float
    exit_codes: list[int | None]
    profile: Path | None
    # (seconds since the workers started, rows drained), about every half second.
    timeline: list[tuple[float, int]] = field(default_factory=list)


def _stop(process: subprocess.Popen[bytes], signum: int, timeout: float) -> int | None:
    if process.poll() is None:
        process.send_signal(signum)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def run_drain(args: argparse.Namespace, client: redis.Redis, meter: Meter, config: Path,
              scratch: Path, folder: Path, total: int) -> DrainRun:
    """Start the workers; time them until every stream is empty and nothing is pending."""
    workers: list[subprocess.Popen[bytes]] = []
    spy: subprocess.Popen[bytes] | None = None
    first: float | None = None
    timeline: list[tuple[float, int]] = []
    profile = folder / "drain-profile.txt" if args.profile else None
    name = (f"drain ({args.processes} worker process{'es' if args.processes > 1 else ''}, "
            f"concurrency {args.concurrency if args.concurrency is not None else 'default'})")
    meter.start()
    started = time.perf_counter()
    try:
        for number in range(args.processes):
            workers.append(start_worker(config, scratch / f"worker-{number}.log",
                                        args.concurrency))
        meter.workers = [worker.pid for worker in workers]
        while True:
            length, pending = streams.backlog(client, args.partitions)
            elapsed = time.perf_counter() - started
            if first is None and length < total:
                first = elapsed
                if profile is not None:
                    spy = profiles.start(workers[0].pid, args.profile_seconds, profile)
            if not timeline or elapsed - timeline[-1][0] >= 0.5 or (length, pending) == (0, 0):
                timeline.append((round(elapsed, 2), total - length))
            if (length, pending) == (0, 0):
                break
            if any(worker.poll() is not None for worker in workers):
                raise RuntimeError(f"a worker exited early; see {scratch}/worker-*.log")
            if elapsed > args.timeout:
                raise RuntimeError(f"not drained in {args.timeout} s: {length} left, "
                                   f"{pending} pending")
            time.sleep(0.05)
        phase = meter.stop(Phase(name, total, elapsed, kind="drain"))
    finally:
        if spy is not None:
            _stop(spy, signal.SIGINT, 60)  # py-spy writes its output on SIGINT
        codes = [_stop(worker, signal.SIGTERM, 30) for worker in workers]
    return DrainRun(phase, first or 0.0, codes, profile, timeline)


def _uvloop_run(coroutine: Any) -> Any:
    import uvloop

    return uvloop.run(coroutine)


def source_state() -> dict[str, Any]:
    """The commit measured, and any uncommitted change to the code the worker runs."""
    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=stack.REPO_ROOT, capture_output=True,
                              text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted": git("status", "--porcelain", "--", "workers", "queueing",
                               "config", "gelombang").splitlines()}


def _counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks drain",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1,
                        help="COPY and drain in turn, this many times (default 1: a "
                        "1,000,000 round takes minutes)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--tiny", action="store_true",
                        help=f"{TINY_COUNT:,} registrations: checks the harness, measures nothing")
    parser.add_argument("--processes", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="batches in flight per worker (default: drain.concurrency)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--copy-connections", type=_counts, default=[1, 2],
                        help="connection counts of the raw COPY runs (batches shared among "
                        "a run's connections), e.g. 1,2; the fastest run is the ceiling")
    parser.add_argument("--appendfsync", choices=["always", "everysec", "no"], default="always")
    parser.add_argument("--envelopes", type=Path, default=None,
                        help="cache file: read the envelopes from it, or write them to it")
    parser.add_argument("--profile", action="store_true",
                        help="sample the worker with py-spy; pg_stat_statements on both phases")
    parser.add_argument("--profile-seconds", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for the drain")
    args = parser.parse_args(argv)
    if args.tiny:
        args.count = TINY_COUNT
    args.partitions = Settings.load().queue.partitions
    return args


def floor(args: argparse.Namespace, run: harness.BenchRun, payloads: list[bytes],
          redis_server: RedisServer, meter: Meter, results: dict[str, Any]) -> Phase:
    """Phase C: the entries queued again and drained with no PostgreSQL (stream_floor).

    Measured from a freshly rewritten AOF, with automatic rewrites off until
    it ends: the drain pays for the rewrites its writes cause (twice in a
    1,000,000 drain), but a floor errs low, never high.
    """
    envelopes = [Envelope.decode(payload) for payload in payloads]
    accepted = frozenset(envelope.registration_id for envelope, state
                         in zip(envelopes, workload.expected_states(envelopes), strict=True)
                         if state == "accepted")
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    streams.enqueue(client, payloads, args.partitions)
    streams.rewrite_aof(client)
    rewrite_percentage = str(client.config_get("auto-aof-rewrite-percentage")
                             ["auto-aof-rewrite-percentage"])
    client.config_set("auto-aof-rewrite-percentage", 0)
    client.config_resetstat()
    rewrites = streams.aof_state(client)[1]
    run.progress("phase C: the streams alone: read, hand off, acknowledge ...")
    meter.workers = []
    meter.start()
    started = time.perf_counter()
    read = _uvloop_run(stream_floor.drain_streams(redis_server.url, args.partitions,
                                                  args.batch_size, accepted))
    phase = meter.stop(Phase("streams only (no PostgreSQL)", read,
                             time.perf_counter() - started, kind="floor"))
    results["floor_redis_commands"] = streams.command_stats(client, read)
    results["floor_aof_rewrites"] = streams.aof_state(client)[1] - rewrites
    client.config_set("auto-aof-rewrite-percentage", rewrite_percentage)
    # It did the drain's Redis work, all of it: every entry gone, every job there.
    left, jobs = streams.backlog(client, args.partitions), streams.jobs(client, args.partitions)
    results["floor_failures"] = [
        f"floor: {name} {found}, expected {wanted}" for name, found, wanted in
        [("entries read", read, len(payloads)), ("entries left, pending", left, (0, 0)),
         *((f"{kind} jobs", count, len(accepted)) for kind, count in jobs.items())]
        if found != wanted]
    client.close()
    run.progress(f"  {phase.rows_per_second:,.0f} entries/s")
    return phase


def bound(ceiling: Phase, least: Phase, cores: int) -> dict[str, float]:
    """The best drain/COPY ratio the floor leaves, at the COPY's busy share and at 100 %.

    A drain writes the COPY's rows (no cheaper way into the table than COPY)
    and does the floor's Redis work, so it spends at least the sum per row.
    """
    cpu = ceiling.cpu_per_row() + least.cpu_per_row()
    return {"copy_cpu_us": ceiling.cpu_per_row() * 1e6, "floor_cpu_us": least.cpu_per_row() * 1e6,
            "at_copy_busy_share": ceiling.cpu_per_row() / cpu,
            "at_full_machine": cores / cpu / ceiling.rows_per_second}


def verify(found: dict[str, int], expected: workload.Expected, total: int) -> list[str]:
    """What the drain got wrong (nothing, when it stored everything exactly once)."""
    wanted = {"rows": total, "state_accepted": expected.accepted,
              "state_duplicate": expected.duplicates, "outbox": 0, "dead_letters": 0,
              "funnel_stored": total, **{kind: expected.accepted for kind in KINDS}}
    return [f"{name}: {found.get(name, 0)}, expected {value}"
            for name, value in wanted.items() if found.get(name, 0) != value]


def ceiling(args: argparse.Namespace, run: harness.BenchRun, payloads: list[bytes],
            postgres: PostgresServer, meter: Meter, results: dict[str, Any]
            ) -> tuple[list[Phase], workload.Expected]:
    """Phase A: the raw COPY, once per connection count; the tables are left empty."""
    rows, expected = workload.copy_rows(payloads)
    copies = []
    for connections in args.copy_connections:
        asyncio.run(database.reset(postgres, args.profile))
        run.progress(f"phase A: raw COPY of {len(rows):,} rows, {connections} connection(s) ...")
        phase = Phase(f"raw COPY, {connections} connection{'s' if connections > 1 else ''}",
                      len(rows), 0.0)

        def finish(seconds: float, phase: Phase = phase) -> Phase:
            phase.seconds = seconds
            return meter.stop(phase)

        meter.start()
        copies.append(_uvloop_run(database.copy_rows(postgres.dsn, rows, args.batch_size,
                                                     connections, finish)))
        run.progress(f"  {copies[-1].rows_per_second:,.0f} rows/s")
    if args.profile:
        results["copy_statements"] = asyncio.run(database.statement_stats(postgres))
    results["copy_sizes"] = asyncio.run(database.sizes(postgres.dsn, len(rows)))
    asyncio.run(database.reset(postgres, args.profile))
    return copies, expected


def measure(args: argparse.Namespace, run: harness.BenchRun, payloads: list[bytes],
            postgres: PostgresServer, redis_server: RedisServer, meter: Meter,
            scratch: Path) -> dict[str, Any]:
    """One round: both phases, the checks and the sizes, as one results document."""
    dsn, total = postgres.dsn, len(payloads)
    results: dict[str, Any] = {"postgres_settings": asyncio.run(database.settings(dsn))}
    copies, expected = ceiling(args, run, payloads, postgres, meter, results)
    client = redis.Redis.from_url(redis_server.url)
    memory = {"empty": streams.used_memory(client)}
    run.progress(f"phase B: XADD {total:,} envelopes to {args.partitions} streams ...")
    results["enqueue_seconds"] = streams.enqueue(client, payloads, args.partitions)
    memory["queued"] = streams.used_memory(client)
    client.config_resetstat()
    aof_before = streams.aof_state(client)
    config = worker_config(scratch / "worker.toml", redis_server.url, dsn, args.batch_size)
    run.progress("phase B: draining ...")
    drain = run_drain(args, client, meter, config, scratch, run.folder, total)
    run.progress(f"  {drain.phase.rows_per_second:,.0f} rows/s")
    memory["drained"] = streams.used_memory(client)
    memory["job_streams"] = streams.jobs_memory(client, args.partitions)
    results["redis_commands"] = streams.command_stats(client, total)
    memory["markers"] = streams.markers_memory(client)  # after the stats: it adds commands
    aof_after = streams.aof_state(client)
    # A rewrite during the drain compacts the file, so its growth then means nothing.
    results["aof_rewrites"] = aof_after[1] - aof_before[1]
    results["aof_bytes_per_registration"] = (aof_after[0] - aof_before[0]) / total

    found = asyncio.run(database.stored(dsn))
    found.update(streams.jobs(client, args.partitions))
    client.close()
    least = floor(args, run, payloads, redis_server, meter, results)
    best = max(copies, key=lambda copy: copy.rows_per_second)
    results.update(
        phases=[asdict(phase) | {"rows_per_second": phase.rows_per_second}
                for phase in (*copies, drain.phase, least)],
        bound=bound(best, least, stack.machine()["cores"]),
        ratio=drain.phase.rows_per_second / max(copy.rows_per_second for copy in copies),
        first_ack_seconds=drain.first_ack_seconds, worker_exit_codes=drain.exit_codes,
        expected=asdict(expected), found=found,
        failures=verify(found, expected, total) + results["floor_failures"],
        sizes=asyncio.run(database.sizes(dsn, total)), drain_timeline=drain.timeline,
        redis_memory=memory | {
            "queued_per_registration": (memory["queued"] - memory["empty"]) / total,
            "after_drain_per_registration": (memory["drained"] - memory["empty"]) / total,
            "jobs_per_accepted": memory["job_streams"] / expected.accepted,
            "markers_per_accepted": memory["markers"] / expected.accepted},
    )
    if args.profile:
        results["drain_statements"] = asyncio.run(database.statement_stats(postgres))
        if drain.profile is not None and drain.profile.exists():
            results["worker_profile"] = profiles.summary(drain.profile)
    return results


def measure_rounds(args: argparse.Namespace, run: harness.BenchRun, payloads: list[bytes],
                   scratch: Path) -> list[dict[str, Any]]:
    """Every round on one scratch Redis and PostgreSQL, emptied between rounds."""
    redis_server = start_redis(scratch / "redis", appendfsync=args.appendfsync,
                               log_file=scratch / "redis.log")
    postgres = start_postgres(scratch / "postgres", fsync=True, log_file=scratch / "postgres.log")
    rounds: list[dict[str, Any]] = []
    try:
        if args.profile:
            database.enable_statement_stats(postgres)
        asyncio.run(migrate(postgres.dsn))
        meter = Meter(postgres, redis_server)
        for number in range(1, args.rounds + 1):
            run.progress(f"round {number}/{args.rounds}")
            if number > 1:
                # The next round starts as the first: empty tables, an empty Redis.
                asyncio.run(database.reset(postgres, args.profile))
                client = redis.Redis.from_url(redis_server.url)
                client.flushall()
                client.close()
            rounds.append(measure(args, run, payloads, postgres, redis_server, meter,
                                  scratch))
            for phase in rounds[-1]["phases"]:
                run.record(phase["name"].split(" (")[0], number, {"phase": phase["name"]},
                           rows_per_second=phase["rows_per_second"], seconds=phase["seconds"],
                           machine_busy_share=phase["machine_busy_share"])
    finally:
        postgres.stop()
        postgres.remove_data()
        redis_server.stop()
    return rounds


def main(argv: list[str] | None = None) -> int:
    """Run the drain suite: results.json, results.md and a PNG in the results folder."""
    args = parse(argv)
    run = harness.BenchRun("drain", args.out, size="tiny" if args.tiny else "full")
    scratch = Path(tempfile.mkdtemp(prefix="gelombang-bench-drain-"))
    run.progress(f"making {args.count:,} registrations through the envelope ...")
    payloads = workload.load_or_generate(args.count, args.envelopes)
    try:
        rounds = measure_rounds(args, run, payloads, scratch)
    finally:
        for log in scratch.glob("worker-*.log"):
            shutil.copy(log, run.folder / log.name)
        shutil.rmtree(scratch, ignore_errors=True)  # the AOF alone is hundreds of MB
    parameters = dict(count=args.count, rounds=args.rounds, batch_size=args.batch_size,
                      processes=args.processes, concurrency=args.concurrency,
                      partitions=args.partitions, copy_connections=args.copy_connections,
                      appendfsync=args.appendfsync, profiled=args.profile,
                      source=source_state())
    ratio = statistics.median(result["ratio"] for result in rounds)
    run.target("drain rows/s / raw COPY ceiling (median of rounds)", ratio, RATIO_GOAL,
               "higher", " x")
    failures = [f"round {number}: {failure}" for number, result in enumerate(rounds, 1)
                for failure in result["failures"]]
    plot(rounds, run.plot_path("drain"))
    # The detailed tables of the last round (sizes, Redis memory and commands, profiles).
    detail = markdown(rounds[-1] | parameters | {"machine": stack.machine()})
    run.finish({"ratio_median": ratio, "rounds": rounds, "failures": failures},
               rounds_table(rounds) + "\n" + detail, parameters=parameters,
               notes=[f"Rounds alternate COPY and drain ({args.rounds} round(s)); the ratio "
                      "is each round's drain against that round's fastest COPY."],
               figures=kept_figures.drain(rounds, args.partitions))
    return harness.print_results(run.folder, failures)


if __name__ == "__main__":
    sys.exit(main())
