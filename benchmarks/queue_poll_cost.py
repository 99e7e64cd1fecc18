"""What a waiting room poll costs the door, beside what a bare 429 costs it.

    python -m benchmarks.queue_poll_cost [--rounds 3] [--seconds 8] [--connections 64]

The issue's bar (docs/waiting-room.md, "Cheap polls"): a poll of a waiting
ticket must cost the door no more CPU than the 429 it answered before tickets
existed. Two doors, alternating round by round, each alone on core 0, wrk on
the other core, the same Redis:

* **429**: the waiting room off, an empty bucket; wrk POSTs distinct valid
  registrations, every one answered 429 `admission_limited` after a round
  trip to Redis (grouped with the others in flight);
* **poll**: the waiting room on; one ticket is taken, and wrk GETs its
  status URL, answered from the door's copy of the line.

Printed: the door's CPU per answer (µs, from /proc: user + system of the
door process), answers a second and wrk's p50/p99, medians over the rounds,
and the Redis round trips the door made for tickets per poll.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson

from benchmarks import door as suite
from benchmarks import stack
from gelombang.devstate import render_toml
from gelombang.processes import free_port
from gelombang.services import start_redis
from loadtest.registrants import RegistrantFactory


@dataclass
class Round:
    """One measured wrk run against one door."""

    kind: str
    answers: int
    seconds: float
    door_cpu: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    queue_calls: float = 0.0


def _config(scratch: Path, redis_url: str, name: str, waiting_room: bool) -> tuple[Path, int,
                                                                                   int]:
    port, admin_port = free_port(), free_port()
    path = stack.door_config(scratch / f"{name}.toml", redis_url, port, admin_port,
                             rate_per_second=0.001, burst=1)
    settings = tomllib.loads(path.read_text())
    settings["waiting_room"]["enabled"] = waiting_room
    settings["queue"]["partitions"] = 1
    path.write_text(render_toml(settings))
    return path, port, admin_port


def _ticket(port: int) -> str:
    """A waiting ticket: registrations posted until one is turned away with a place."""
    factory = RegistrantFactory(seed=11)
    for _ in range(100):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/registrations",
            data=orjson.dumps(factory.make().body()),
            headers={"Content-Type": "application/json"}, method="POST")
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except urllib.error.HTTPError as refused:
            body = orjson.loads(refused.read())
            if "queue" in body:
                return str(body["queue"]["status_url"])
    raise RuntimeError("no ticket after 100 registrations: is the waiting room on?")


def _queue_calls(admin_port: int, token: str) -> float:
    request = urllib.request.Request(f"http://127.0.0.1:{admin_port}/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
    text = urllib.request.urlopen(request, timeout=5).read().decode()
    found = re.search(r"^gelombang_queue_redis_calls_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def _wrk_get(url: str, connections: int, seconds: int,
             layout: suite.Layout) -> suite.WrkResult:
    command = stack.pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                           layout.load if stack.cores() > 1 else None)
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return suite.parse_wrk(done.stdout)


def measure_round(kind: str, config: Path, port: int, admin_port: int, bodies: Path,
                  args: argparse.Namespace, layout: suite.Layout) -> Round:
    """Start a door, load it, and read its CPU around the measured run."""
    env = {**os.environ, "GELOMBANG_CONFIG": str(config)}
    token = tomllib.loads(config.read_text())["admin"]["token"]
    door = suite.Contender(kind, [sys.executable, "-m", "intake.process"], env, port,
                           cores=layout.server)
    with door:
        assert door.process is not None
        base = f"http://127.0.0.1:{port}"
        if kind == "poll":
            url = base + _ticket(port)
            _wrk_get(url, args.connections, 2, layout)  # warm-up
            calls = _queue_calls(admin_port, token)
            before = suite.cpu_seconds(door.process.pid)
            found = _wrk_get(url, args.connections, args.seconds, layout)
            door_cpu = suite.cpu_seconds(door.process.pid) - before
            calls = _queue_calls(admin_port, token) - calls
        else:
            suite.wrk(base + "/v1/registrations", bodies, args.connections, 2,
                      cores=layout.load)
            calls = 0.0
            before = suite.cpu_seconds(door.process.pid)
            found = suite.wrk(base + "/v1/registrations", bodies, args.connections,
                              args.seconds, cores=layout.load)
            door_cpu = suite.cpu_seconds(door.process.pid) - before
    return Round(kind, found.requests, found.seconds, door_cpu, found.p50_ms, found.p99_ms,
                 found.non_2xx, calls)


def main(argv: list[str] | None = None) -> int:
    """Alternate the two doors and print the medians."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.queue_poll_cost",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    suite.exit_on_sigterm()
    scratch = Path(tempfile.mkdtemp(prefix="gelombang-poll-cost-"))
    layout = suite.Layout.for_cores(suite.available_cores())
    bodies = scratch / "bodies.lua"
    suite.write_bodies(bodies, 20_000)
    redis = start_redis(scratch / "redis", appendfsync="always", log_file=scratch / "redis.log")
    rounds: list[Round] = []
    try:
        stack.pin_family(redis.pid, layout.services)
        refusing = _config(scratch, redis.url, "refusing", waiting_room=False)
        polled = _config(scratch, redis.url, "polled", waiting_room=True)
        for number in range(args.rounds):
            for kind, (config, port, admin_port) in (("429", refusing), ("poll", polled)):
                suite.redis_flush(redis.url)
                found = measure_round(kind, config, port, admin_port, bodies, args, layout)
                rounds.append(found)
                print(f"round {number + 1} {kind:>4}: {found.answers / found.seconds:9,.0f}/s, "
                      f"{found.door_cpu / found.answers * 1e6:6.1f} µs door CPU per answer, "
                      f"p99 {found.p99_ms:.2f} ms", flush=True)
    finally:
        redis.stop()
    print(f"\n{args.rounds} rounds, {args.connections} connections, {args.seconds} s each "
          "(medians):")
    for kind in ("429", "poll"):
        mine = [r for r in rounds if r.kind == kind]
        cpu = statistics.median(r.door_cpu / r.answers * 1e6 for r in mine)
        rate = statistics.median(r.answers / r.seconds for r in mine)
        p99 = statistics.median(r.p99_ms for r in mine)
        line = (f"  {kind:>4}: {cpu:6.1f} µs door CPU per answer, {rate:9,.0f} answers/s, "
                f"p99 {p99:.2f} ms")
        if kind == "poll":
            calls = sum(r.queue_calls for r in mine) / sum(r.answers for r in mine)
            line += f", {calls:.5f} Redis round trips per poll (the ticks)"
        print(line)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
