"""The opening wave's verification: email and NIK checks after the drain.

    python -m benchmarks verification [--count 80000] [--arrival-seconds 60]
                                      [--nik-capacity 500] [--email-rate 10000]

Starts a scratch Redis (AOF always) and PostgreSQL, and the deployed
processes with one config: `gelombang mail-sink`, `gelombang nik-sim` (at
`--nik-capacity` requests/s, its default latency), `worker store`,
`worker email` and `worker nik` (its shared bucket set to the simulator's
capacity, burst 1). Registrants are made so the simulator's population
knows them (`RegistrantFactory.citizen`), sealed under the workers' keys,
and appended to the intake streams as the door would, spread evenly over
`--arrival-seconds` (the 2020 wave: 80,000 in 60 s). The clock starts with
the first append. Reported: when every registration was stored, sent its
email, and had its NIK checked; email and NIK jobs/s over their busy
periods; what the simulator saw (most calls in one second, any 429).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis

from benchmarks import stack, streams, workload
from config.settings import Settings
from database.schema import migrate
from gelombang.capacity_figures import write_figures
from gelombang.devstate import render_toml
from gelombang.processes import free_port
from gelombang.services import PostgresServer, RedisServer, start_postgres, start_redis
from queueing.sealing import KeyedHasher, Sealer

# The workers' shared NIK rate, as a share of the simulator's hard capacity.
NIK_RATE_SHARE = 0.98

PROGRESS_SQL = """
SELECT count(*),
       count(*) FILTER (WHERE email_verification NOT IN ('pending')),
       count(*) FILTER (WHERE nik_verification NOT IN ('pending'))
  FROM registrations
"""


def add_wave_options(parser: argparse.ArgumentParser) -> None:
    """The opening wave's size and the outside services' rates (this suite and `wave`)."""
    parser.add_argument("--count", type=int, default=80_000)
    parser.add_argument("--arrival-seconds", type=float, default=60.0)
    parser.add_argument("--nik-capacity", type=float, default=500.0,
                        help="the simulator's capacity, and the workers' shared NIK rate")
    parser.add_argument("--email-rate", type=float, default=10_000.0,
                        help="the email workers' shared rate limit (a real relay's is lower)")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks verification")
    add_wave_options(parser)
    parser.add_argument("--timeout", type=float, default=900.0)
    return parser.parse_args(argv)


def verification_overrides(nik_capacity: float, email_rate: float,
                           maildir: Path) -> dict[str, dict[str, Any]]:
    """The verification side of a benchmark stack, by config section (the wave suite's too).

    The mail sink and the NIK simulator on free ports; the simulator at
    `nik_capacity` requests/s with its default latency, and the workers' shared
    NIK bucket 2 % below it, burst 1 (as an operator would set it: the
    simulator, like a ministry, admits a fixed number per calendar second and
    answers 429 with Retry-After: 1 beyond it, and calls that leave a little
    late bunch up across a second's edge; each 429 pauses a worker's calls
    for that second); the email rate limit at `email_rate`.
    """
    sim_port, smtp_port = free_port(), free_port()
    return {
        "email": {"smtp_port": smtp_port, "maildir": str(maildir),
                  "rate_per_second": email_rate},
        "nik": {"base_url": f"http://127.0.0.1:{sim_port}",
                "rate_per_second": nik_capacity * NIK_RATE_SHARE,
                "burst": 1, "concurrency": max(32, int(nik_capacity / 8))},
        "nik_sim": {"port": sim_port, "capacity_per_second": nik_capacity},
        "logging": {"level": "WARNING"},
    }


def write_config(path: Path, redis_url: str, dsn: str, scratch: Path,
                 args: argparse.Namespace) -> tuple[Settings, dict[str, Any]]:
    """One config for every process; the keys, for sealing the workload the same way."""
    base = Settings.load().model_dump(mode="json")
    keys = stack.fresh_keys()
    base["keys"] = keys
    base["redis"]["url"] = redis_url
    base["postgres"]["dsn"] = dsn
    for section, values in verification_overrides(args.nik_capacity, args.email_rate,
                                                  scratch / "mail").items():
        base[section].update(values)
    path.write_text(render_toml(base))
    return Settings.model_validate(base), keys


def start(command: list[str], config: Path, log: Path) -> subprocess.Popen[bytes]:
    """One `gelombang …` process, as deployed."""
    env = {**os.environ, "GELOMBANG_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gelombang", *command],
                                cwd=stack.REPO_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def wait_port(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


def busy_rate(timeline: list[tuple[float, int, int, int]], column: int, total: int
              ) -> tuple[float | None, float | None, float | None]:
    """(first done, all done, jobs/s between them) for one column of the timeline."""
    first = next((t for t, *counts in timeline if counts[column] > 0), None)
    done = next((t for t, *counts in timeline if counts[column] >= total), None)
    if first is None or done is None or done <= first:
        return first, done, None
    return first, done, total / (done - first)


async def progress(dsn: str) -> tuple[int, int, int]:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(PROGRESS_SQL)
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])
    finally:
        await connection.close()


def sim_stats(settings: Settings) -> dict[str, Any]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{settings.nik.base_url}/admin/stats", timeout=5) as reply:
        stats: dict[str, Any] = json.load(reply)
    stats.pop("per_second", None)
    return stats


@dataclass
class VerificationStack:
    """The suite's running processes, with what their run needs."""

    settings: Settings
    redis: RedisServer
    postgres: PostgresServer
    payloads: list[bytes]
    processes: dict[str, subprocess.Popen[bytes]]
    exit_codes: dict[str, int | None] = field(default_factory=dict)


@contextlib.contextmanager
def verification_stack(args: argparse.Namespace,
                       scratch: Path) -> Iterator[VerificationStack]:
    """Scratch Redis and PostgreSQL, the mail sink, the simulator and the three workers
    from one config, and `args.count` registrants sealed under its keys; all stopped
    after the block (a paused worker let go first), their exit codes kept."""
    redis_server = start_redis(scratch / "redis", log_file=scratch / "redis.log")
    postgres = start_postgres(scratch / "postgres", fsync=True,
                              log_file=scratch / "postgres.log")
    processes: dict[str, subprocess.Popen[bytes]] = {}
    running: VerificationStack | None = None
    try:
        asyncio.run(migrate(postgres.dsn))
        config = scratch / "bench.toml"
        settings, keys = write_config(config, redis_server.url, postgres.dsn, scratch, args)
        sim = settings.nik_sim
        print(f"making {args.count:,} registrants the simulator knows ...", flush=True)
        payloads = workload.generate(
            args.count, duplicate_every=args.count + 1,
            sealer=Sealer({"bench": base64.b64decode(keys["sealing_keys"]["bench"])}, "bench"),
            address_sealer=Sealer({"bench": base64.b64decode(keys["address_keys"]["bench"])},
                                  "bench"),
            hasher=KeyedHasher(base64.b64decode(keys["hash_key"])),
            make=lambda factory: factory.citizen(sim.population_seed, sim.existing_share))
        processes["mail-sink"] = start(["mail-sink"], config, scratch / "mail-sink.log")
        processes["nik-sim"] = start(["nik-sim"], config, scratch / "nik-sim.log")
        wait_port(settings.email.smtp_port)
        wait_port(sim.port)
        for role in ("store", "email", "nik"):
            processes[role] = start(["worker", role], config, scratch / f"worker-{role}.log")
        running = VerificationStack(settings, redis_server, postgres, payloads, processes)
        yield running
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGCONT)  # a paused worker must see its SIGTERM
        codes = {name: stop(process) for name, process in reversed(processes.items())}
        if running is not None:
            running.exit_codes.update(codes)
        postgres.stop()
        redis_server.stop()


def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    with verification_stack(args, scratch) as running:
        time.sleep(2.0)  # let the workers connect and create their groups
        client = redis.Redis.from_url(running.redis.url)
        timeline = wave(args, client, running.postgres.dsn, running.payloads,
                        running.processes)
        stats = sim_stats(running.settings)
    codes = running.exit_codes
    total = args.count
    stored = busy_rate(timeline, 0, total)
    emails = busy_rate(timeline, 1, total)
    niks = busy_rate(timeline, 2, total)
    return {
        "count": total, "arrival_seconds": args.arrival_seconds,
        "nik_capacity": args.nik_capacity, "email_rate_limit": args.email_rate,
        "all_stored_s": stored[1], "all_emails_s": emails[1], "all_nik_checked_s": niks[1],
        "email_jobs_per_s": emails[2], "nik_jobs_per_s": niks[2],
        "simulator": stats, "exit_codes": codes,
        "timeline": [list(point) for point in timeline],
    }


def wave(args: argparse.Namespace, client: redis.Redis, dsn: str, payloads: list[bytes],
         processes: dict[str, subprocess.Popen[bytes]]) -> list[tuple[float, int, int, int]]:
    """Append the wave over arrival_seconds; sample progress until all are verified."""
    partitions = Settings.load().queue.partitions
    slices = max(1, int(args.arrival_seconds))
    per_slice = -(-len(payloads) // slices)
    timeline: list[tuple[float, int, int, int]] = []
    started = time.monotonic()
    sent = 0
    next_sample = 0.0
    while True:
        elapsed = time.monotonic() - started
        due = min(len(payloads), per_slice * (int(elapsed * slices / args.arrival_seconds) + 1)
                  if args.arrival_seconds > 0 else len(payloads))
        if due > sent:
            streams.enqueue(client, payloads[sent:due], partitions)
            sent = due
        if elapsed >= next_sample:
            counts = asyncio.run(progress(dsn))
            timeline.append((round(elapsed, 2), *counts))
            next_sample = elapsed + 1.0
            if int(elapsed) % 10 == 0:
                print(f"  {elapsed:6.1f} s: queued {sent:,}, stored {counts[0]:,}, "
                      f"emails {counts[1]:,}, NIK checks {counts[2]:,}", flush=True)
            if sent == len(payloads) and min(counts) >= len(payloads):
                return timeline
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited early")
        if elapsed > args.timeout:
            raise RuntimeError(f"not verified within {args.timeout} s")
        time.sleep(0.05)


def markdown(results: dict[str, Any]) -> str:
    def seconds(value: float | None) -> str:
        return "not reached" if value is None else f"{value:.1f} s"

    def rate(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f}/s"

    sim = results["simulator"]
    return "\n".join([
        f"## verification: {results['count']:,} registrations arriving over "
        f"{results['arrival_seconds']:.0f} s",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| all stored | {seconds(results['all_stored_s'])} |",
        f"| all verification emails sent | {seconds(results['all_emails_s'])} |",
        f"| all NIKs checked (simulator at {results['nik_capacity']:.0f}/s) | "
        f"{seconds(results['all_nik_checked_s'])} |",
        f"| email jobs/s (first to last sent) | {rate(results['email_jobs_per_s'])} |",
        f"| NIK jobs/s (first to last checked) | {rate(results['nik_jobs_per_s'])} |",
        f"| simulator: most calls in one second | {sim.get('max_per_second')} |",
        f"| simulator: answers by status | {sim.get('statuses')} |",
        f"| process exit codes after SIGTERM | {results['exit_codes']} |",
        "",
    ])


def run_and_report(suite: str, args: argparse.Namespace,
                   run_suite: Callable[[argparse.Namespace, Path], dict[str, Any]],
                   report: Callable[[dict[str, Any]], str],
                   figures: Callable[[dict[str, Any]], dict[str, float]] | None = None) -> int:
    """Run a suite in a scratch folder; keep its logs, results.json and results.md.

    `figures`, if given, picks the figures `gelombang plan` reads out of the
    results; they are kept in figures.json beside them.
    """
    folder = stack.result_folder(suite)
    scratch = Path(tempfile.mkdtemp(prefix=f"gelombang-bench-{suite}-"))
    try:
        results = run_suite(args, scratch)
    finally:
        for log in scratch.glob("*.log"):
            shutil.copy(log, folder / log.name)
        shutil.rmtree(scratch, ignore_errors=True)
    results.update(suite=suite, machine=stack.machine())
    stack.write_json(folder / "results.json", results)
    if figures is not None:
        write_figures(folder, suite, figures(results), results["machine"],
                      time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    text = report(results)
    (folder / "results.md").write_text(text)
    print(text)
    print(f"results in {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_and_report("verification", parse(argv), run, markdown)
