"""Memory suite: what a registration costs in Redis, in the door, and in PostgreSQL.

    python -m benchmarks memory [--count 200000] [--door-count 20000] [--connections 64]
                                [--envelopes FILE] [--out DIR] [--tiny]

A scratch Redis (AOF, appendfsync always) and PostgreSQL (fsync on) are started.

1. **Redis, queued.** `--count` registrations are made through the real
   envelope (`benchmarks/workload.py`, as the drain suite) and XADDed to
   their partitions' streams as the door appends them; `INFO memory`
   used_memory before and after, and `MEMORY USAGE` of the intake streams,
   are divided by the count.
2. **The door.** One door process (`python -m intake.process`) on the same
   Redis: its RSS once idle, then `--door-count` registrations POSTed to it
   (`--connections` at a time, each with its own Idempotency-Key as the web
   form sends one; the bucket is set far above the load so every one is
   admitted), its RSS and peak RSS after. Redis's growth over that load,
   divided by the registrations, is the cost of a registration queued the
   way the form queues it: the stream entry plus its idempotency record
   (a field of a bucket hash, kept one to two `queue.idempotency_ttl_seconds`).
   That figure is the target's.
3. **PostgreSQL.** `gelombang worker store` drains everything; then
   `pg_total_relation_size` of `registrations` (heap, TOAST, indexes) and of
   the other worker tables per stored registration, and what stays in Redis
   (verification jobs, hand-off markers, idempotency records).

One round (the sizes are deterministic to within a few bytes; there is no
contender to alternate with).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson
import redis

from benchmarks import database, drain, harness, kept_figures, stack, streams, workload
from benchmarks.verification import stop
from config.settings import Settings
from database.schema import migrate
from gelombang.devstate import render_toml
from gelombang.processes import free_port
from gelombang.services import start_postgres, start_redis
from loadtest.registrants import RegistrantFactory
from queueing.keys import partitions

# Per registration: the target the issue sets for Redis.
REDIS_GOAL_BYTES: Final = 400.0
# Worker tables besides `registrations` (sized too; after a drain they hold few rows).
OTHER_TABLES: Final = ("verification_handoffs", "funnel_counts", "dead_letters")
TINY: Final = {"count": 2_000, "door_count": 300}


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200_000,
                        help="registrations XADDed straight to the streams")
    parser.add_argument("--door-count", type=int, default=20_000,
                        help="registrations POSTed through the door")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--envelopes", type=Path, default=None,
                        help="cache file of envelopes (shared with the drain suite)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--tiny", action="store_true",
                        help=f"{TINY['count']:,} + {TINY['door_count']} registrations: "
                        "checks the harness, measures nothing")
    args = parser.parse_args(argv)
    if args.tiny:
        args.count, args.door_count = TINY["count"], TINY["door_count"]
    args.partitions = Settings.load().queue.partitions
    return args


def rss(pid: int) -> dict[str, int]:
    """A process's resident set now and at its peak, in bytes (/proc/PID/status)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024  # reported in kB
    return {"rss": found["VmRSS"], "peak_rss": found["VmHWM"]}


def streams_memory(client: redis.Redis, count: int) -> int:
    """Bytes the intake streams take (MEMORY USAGE over every entry)."""
    return sum(int(client.memory_usage(partition.stream, samples=0) or 0)
               for partition in partitions(count))


def door_config(path: Path, redis_url: str, dsn: str) -> tuple[Path, int, int]:
    """The door's config (stack.door_config, plus the scratch PostgreSQL); its two ports."""
    port, admin_port = free_port(), free_port()
    stack.door_config(path, redis_url, port, admin_port, rate_per_second=1e9,
                      burst=1_000_000_000, backlog_high_water=1_000_000_000)
    with path.open("rb") as handle:
        sections: dict[str, dict[str, Any]] = tomllib.load(handle)
    sections["postgres"]["dsn"] = dsn
    path.write_text(render_toml(sections))
    return path, port, admin_port


async def post_all(port: int, count: int, connections: int) -> Counter[int]:
    """POST `count` distinct valid registrations, `connections` at a time; answers by status."""
    factory = RegistrantFactory(seed=23)
    bodies = [orjson.dumps(factory.make().body()) for _ in range(count)]
    url = f"http://127.0.0.1:{port}/v1/registrations"
    statuses: Counter[int] = Counter()
    queue = iter(bodies)

    async def client(session: aiohttp.ClientSession) -> None:
        for body in queue:  # shared: each client takes the next body
            headers = {"Content-Type": "application/json",
                       "Idempotency-Key": uuid.uuid4().hex}
            async with session.post(url, data=body, headers=headers) as reply:
                await reply.read()
                statuses[reply.status] += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(connections)))
    return statuses


def measure_door(args: argparse.Namespace, run: harness.BenchRun, client: redis.Redis,
                 config: Path, port: int, scratch: Path) -> dict[str, Any]:
    """The door's RSS idle and after a load, and Redis's growth over that load."""
    env = {**os.environ, "GELOMBANG_CONFIG": str(config)}
    with (scratch / "door.log").open("ab") as log:
        door = subprocess.Popen([sys.executable, "-m", "intake.process"], env=env,
                                      cwd=stack.REPO_ROOT, stdout=log,
                                      stderr=subprocess.STDOUT)
    try:
        stack.wait_http(f"http://127.0.0.1:{port}/v1/registrations")
        time.sleep(1.0)  # settled: imports done, live settings read once
        idle = rss(door.pid)
        before, streams_before = streams.used_memory(client), streams_memory(client,
                                                                             args.partitions)
        run.progress(f"door idle: RSS {idle['rss'] / 2**20:.1f} MiB; POSTing "
                     f"{args.door_count:,} registrations, {args.connections} at a time ...")
        started = time.perf_counter()
        statuses = asyncio.run(post_all(port, args.door_count, args.connections))
        seconds = time.perf_counter() - started
        loaded = rss(door.pid)
        after, streams_after = streams.used_memory(client), streams_memory(client,
                                                                           args.partitions)
        run.progress(f"  {args.door_count / seconds:,.0f} req/s; RSS "
                     f"{loaded['rss'] / 2**20:.1f} MiB (peak {loaded['peak_rss'] / 2**20:.1f})")
    finally:
        exit_code = stop(door)
    admitted = statuses.get(202, 0)
    if admitted != args.door_count:
        raise RuntimeError(f"the door admitted {admitted} of {args.door_count}: {statuses}")
    grown = after - before
    streams_grown = streams_after - streams_before
    return {"idle_rss": idle["rss"], "loaded_rss": loaded["rss"],
            "peak_rss": loaded["peak_rss"], "requests_per_second": args.door_count / seconds,
            "statuses": dict(statuses), "exit_code": exit_code,
            "redis_per_registration": grown / admitted,
            "stream_per_registration": streams_grown / admitted,
            # The rest of the growth: the Idempotency-Key records and their bucket
            # hashes (MEMORY USAGE overstates the streams, so this reads low).
            "idempotency_per_registration": (grown - streams_grown) / admitted}


def drain_all(args: argparse.Namespace, run: harness.BenchRun, client: redis.Redis,
              redis_url: str, dsn: str, scratch: Path, total: int) -> float:
    """`gelombang worker store` until every stream is empty; the seconds it took."""
    config = drain.worker_config(scratch / "worker.toml", redis_url, dsn, 500)
    worker = drain.start_worker(config, scratch / "worker-store.log", None)
    started = time.perf_counter()
    try:
        while streams.backlog(client, args.partitions) != (0, 0):
            if worker.poll() is not None:
                raise RuntimeError(f"the store worker exited; see {scratch}/worker-store.log")
            if time.perf_counter() - started > 600 + total / 1000:
                raise RuntimeError("not drained in time")
            time.sleep(0.2)
        return time.perf_counter() - started
    finally:
        stop(worker)


async def table_sizes(dsn: str) -> dict[str, dict[str, int]]:
    """Rows and pg_total_relation_size (table, TOAST, indexes) of each other worker table."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        return {table: {"rows": int(await connection.fetchval(f"SELECT count(*) FROM {table}")),
                        "bytes": int(await connection.fetchval(
                            "SELECT pg_total_relation_size($1)", table))}
                for table in OTHER_TABLES}
    finally:
        await connection.close()


def measure(args: argparse.Namespace, run: harness.BenchRun, scratch: Path) -> dict[str, Any]:
    """All three parts, on one scratch Redis and PostgreSQL."""
    run.progress(f"making {args.count:,} registrations through the envelope ...")
    payloads = workload.load_or_generate(args.count, args.envelopes)
    redis_server = start_redis(scratch / "redis", log_file=scratch / "redis.log")
    postgres = start_postgres(scratch / "postgres", fsync=True,
                              log_file=scratch / "postgres.log")
    client = redis.Redis.from_url(redis_server.url)
    try:
        asyncio.run(migrate(postgres.dsn))
        empty = streams.used_memory(client)
        run.progress(f"XADD {args.count:,} envelopes to {args.partitions} streams ...")
        streams.enqueue(client, payloads, args.partitions)
        queued = streams.used_memory(client)
        queued_streams = streams_memory(client, args.partitions)
        config, port, _ = door_config(scratch / "door.toml", redis_server.url, postgres.dsn)
        door = measure_door(args, run, client, config, port, scratch)
        total = args.count + args.door_count
        with_door = streams.used_memory(client)
        run.progress(f"draining {total:,} registrations with `worker store` ...")
        drain_seconds = drain_all(args, run, client, redis_server.url, postgres.dsn,
                                  scratch, total)
        drained = streams.used_memory(client)
        jobs = streams.jobs_memory(client, args.partitions)
        found = asyncio.run(database.stored(postgres.dsn))
        sizes = asyncio.run(database.sizes(postgres.dsn, total))
        others = asyncio.run(table_sizes(postgres.dsn))
    finally:
        client.close()
        postgres.stop()
        postgres.remove_data()
        redis_server.stop()
    accepted = found.get("state_accepted", 0)
    return {
        "envelope_bytes": sum(map(len, payloads)) / len(payloads),
        "redis": {
            "empty": empty, "queued": queued, "with_door_load": with_door, "drained": drained,
            "queued_per_registration": (queued - empty) / args.count,
            "stream_usage_per_registration": queued_streams / args.count,
            # What stays once everything is stored: per accepted registration, its two
            # verification jobs (until consumed), a hand-off marker per batch (drain.
            # handoff_marker_seconds) and, for the door's, the idempotency records.
            "jobs_per_accepted": jobs / max(accepted, 1),
            "after_drain_per_registration": (drained - empty) / total,
        },
        "door": door,
        "drain_seconds": drain_seconds, "stored": found, "total": total,
        "postgres": sizes, "other_tables": others,
        "other_tables_per_registration": sum(t["bytes"] for t in others.values()) / total,
    }


def check(results: dict[str, Any]) -> list[str]:
    """What went wrong (nothing, when every registration was stored once)."""
    found, total = results["stored"], results["total"]
    wrong = [f"{name}: {found.get(name, 0)}, expected {value}"
             for name, value in (("rows", total), ("funnel_stored", total),
                                 ("outbox", 0), ("dead_letters", 0))
             if found.get(name, 0) != value]
    return wrong


def table(results: dict[str, Any]) -> str:
    """The figures as one Markdown table."""
    r, door, pg = results["redis"], results["door"], results["postgres"]
    mib = 2**20
    rows: list[tuple[str, float, str]] = [
        ("Redis: used_memory per registration queued through the door "
         "(stream entry + Idempotency-Key record)", door["redis_per_registration"], "bytes"),
        ("  of which the stream entry (MEMORY USAGE)", door["stream_per_registration"], "bytes"),
        ("  of which the idempotency record", door["idempotency_per_registration"], "bytes"),
        ("Redis: used_memory per registration XADDed without a key",
         r["queued_per_registration"], "bytes"),
        ("  MEMORY USAGE of the intake streams, per registration",
         r["stream_usage_per_registration"], "bytes"),
        ("envelope (msgpack), mean", results["envelope_bytes"], "bytes"),
        ("Redis after the drain, per registration (jobs, markers, idempotency records)",
         r["after_drain_per_registration"], "bytes"),
        ("  verification jobs, per accepted registration", r["jobs_per_accepted"], "bytes"),
        ("door RSS, idle", door["idle_rss"] / mib, "MiB"),
        (f"door RSS after {door['statuses'].get(202, 0):,} registrations",
         door["loaded_rss"] / mib, "MiB"),
        ("door peak RSS", door["peak_rss"] / mib, "MiB"),
        ("PostgreSQL: registrations, total (heap + TOAST + indexes) per stored registration",
         pg["total_per_row"], "bytes"),
        ("  heap", pg["heap_per_row"], "bytes"),
        ("    of which pages holding rows", pg["heap_occupied_per_row"], "bytes"),
        *((f"  {index}", float(pg[f"{index}_per_row"]), "bytes")
          for index in database.INDEXES),
        ("  TOAST, free space and visibility maps", pg["toast_and_maps_per_row"], "bytes"),
        ("PostgreSQL: other worker tables (" + ", ".join(OTHER_TABLES) + ") per registration",
         results["other_tables_per_registration"], "bytes"),
    ]
    return harness.markdown_table(["measure", "value", "unit"], rows)


def plot(results: dict[str, Any], path: Path) -> None:
    """Bytes per registration: Redis (queued and left after the drain) and PostgreSQL."""
    figure, _ = harness.new_figure(9.0, 4.0)
    figure.clear()  # two panels instead of the one new_figure made
    left, right = figure.subplots(1, 2)
    door, r, pg = results["door"], results["redis"], results["postgres"]
    labels = ["XADD, no key", "through the door", "left after drain"]
    stream_part = [r["stream_usage_per_registration"], door["stream_per_registration"], 0.0]
    other_part = [r["queued_per_registration"] - r["stream_usage_per_registration"],
                  door["idempotency_per_registration"], r["after_drain_per_registration"]]
    left.bar(labels, stream_part, label="stream entry")
    left.bar(labels, other_part, bottom=stream_part,
             label="idempotency record / jobs, markers")
    left.axhline(REDIS_GOAL_BYTES, color="red", linestyle="--", label="goal 400")
    left.set_title("Redis, bytes per registration")
    left.legend(fontsize=8)
    parts = {"heap": pg["heap_per_row"],
             **{name.removeprefix("registrations_"): pg[f"{name}_per_row"]
                for name in database.INDEXES},
             "other tables": results["other_tables_per_registration"]}
    bottom = 0.0
    for name, value in parts.items():
        right.bar(["PostgreSQL"], [value], bottom=[bottom], label=name)
        bottom += value
    right.set_title("PostgreSQL, bytes per stored registration")
    right.legend(fontsize=8)
    harness.save_figure(figure, path)


def main(argv: list[str] | None = None) -> int:
    """Run the memory suite and write results.json, results.md and a PNG."""
    args = parse(argv)
    run = harness.BenchRun("memory", args.out, size="tiny" if args.tiny else "full")
    scratch = Path(tempfile.mkdtemp(prefix="gelombang-bench-memory-"))
    try:
        results = measure(args, run, scratch)
    finally:
        for log in scratch.glob("*.log"):
            shutil.copy(log, run.folder / log.name)
        shutil.rmtree(scratch, ignore_errors=True)
    door = results["door"]
    run.record("redis", 1, bytes_per_registration_door=door["redis_per_registration"],
               bytes_per_registration_no_key=results["redis"]["queued_per_registration"],
               bytes_per_registration_after_drain=results["redis"][
                   "after_drain_per_registration"])
    run.record("door", 1, idle_rss_bytes=door["idle_rss"], loaded_rss_bytes=door["loaded_rss"],
               peak_rss_bytes=door["peak_rss"])
    run.record("postgres", 1, bytes_per_stored=results["postgres"]["total_per_row"],
               other_tables_bytes_per_stored=results["other_tables_per_registration"])
    # Two readings of "bytes per queued registration": what the backlog holds
    # per entry (the stream, through the door), and that plus the keyed
    # request's idempotency record, which outlives the entry by 24 to 48 h.
    run.target("Redis bytes per queued registration (its stream entry, through the door)",
               door["stream_per_registration"], REDIS_GOAL_BYTES, "lower", " B")
    run.target("Redis bytes per keyed registration (stream entry + idempotency record)",
               door["redis_per_registration"], REDIS_GOAL_BYTES, "lower", " B")
    plot(results, run.plot_path("memory"))
    failures = check(results)
    notes = [f"{results['total']:,} registrations ({args.count:,} XADDed, "
             f"{args.door_count:,} through the door), {args.partitions} partitions, "
             f"drained in {results['drain_seconds']:.1f} s; checks: "
             + ("all passed" if not failures else "; ".join(failures)) + "."]
    run.finish({"count": args.count, "door_count": args.door_count, **results,
                "failures": failures}, table(results),
               parameters={"count": args.count, "door_count": args.door_count,
                           "connections": args.connections, "partitions": args.partitions},
               notes=notes, figures=kept_figures.memory(results))
    return harness.print_results(run.folder, failures)


if __name__ == "__main__":
    sys.exit(main())
