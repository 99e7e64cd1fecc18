"""`gelombang bench door`: one door process against nginx, plain aiohttp and the naive design.

Four servers, each alone on core 0, under the same closed-loop wrk load (64
and 256 connections, distinct valid registrations round-robin):

- nginx answering `return 202`: the machine's HTTP ceiling;
- plain aiohttp + uvloop answering 202: the framework ceiling;
- Gelombang's door: validation, sealing, admission and the durable append
  (Redis AOF, `appendfsync always`);
- the naive design: FastAPI + uvicorn, one asyncpg INSERT per request
  (PostgreSQL, fsync on).

wrk, Redis and PostgreSQL share the other core(s). Contenders alternate
round by round (A B C D A B C D …); each round measures every connection
count; the figures are medians over the rounds. wrk's helpers here
(`wrk`, `parse_wrk`) also serve the scale suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks import cpu, kept_figures, stack
from benchmarks.baselines import nginx
from benchmarks.harness import (
    BenchRun,
    alternate,
    markdown_table,
    new_figure,
    print_results,
    save_figure,
)
from gelombang.processes import free_port, kill_group, stop_process
from gelombang.services import start_postgres, start_redis
from loadtest.registrants import RegistrantFactory

WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")
SERVER_CORE, LOAD_CORE = 0, 1

NGINX, AIOHTTP, DOOR, NAIVE = ("nginx (HTTP ceiling)", "plain aiohttp (framework ceiling)",
                               "gelombang door", "naive FastAPI + INSERT")
# The lean door's targets (issue 20): the door against the framework ceiling and
# the naive design, and its own CPU per admitted registration.
GOALS = {AIOHTTP: 0.6, NAIVE: 4.0}
DOOR_CPU_GOAL_US = 95.0


# --- where each process runs -------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Cores for the server under test, for wrk, and for Redis and PostgreSQL."""

    server: tuple[int, ...] | None
    load: tuple[int, ...] | None
    services: tuple[int, ...] | None

    @classmethod
    def for_cores(cls, cores: Sequence[int]) -> Layout:
        """The server alone on the first core; wrk and the services split the rest."""
        if len(cores) < 2:
            return cls(None, None, None)  # nothing to separate: let the kernel schedule
        rest = tuple(cores[1:])
        if len(rest) == 1:
            return cls((cores[0],), rest, rest)
        half = max(1, len(rest) // 2)
        return cls((cores[0],), rest[:half], rest[half:])

    @property
    def wrk_threads(self) -> int:
        """One wrk thread per load core (one thread saturates a core)."""
        return len(self.load) if self.load else 1


def available_cores() -> list[int]:
    """The cores this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


# --- wrk -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reported."""

    requests: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def accepted_per_second(self) -> float:
        """Answers that were 2xx (202s), per second."""
        return (self.requests - self.non_2xx) / self.seconds if self.seconds else 0.0


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _millis(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if found is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def _required(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text)
    if found is None:
        raise ValueError(f"wrk output without {pattern!r}:\n{text}")
    return found


def parse_wrk(text: str) -> WrkResult:
    """Parse `wrk --latency` output (Debian's wrk 4.1)."""
    total = _required(r"(\d+) requests in ([\d.]+(?:us|ms|s|m|h))", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       text)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_millis(total.group(2)) / 1000.0,
        requests_per_second=float(_required(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        p50_ms=_millis(_required(r"\s50%\s+(\S+)", text).group(1)),
        p99_ms=_millis(_required(r"\s99%\s+(\S+)", text).group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, errors.groups())) if errors else 0,
    )


def wrk(url: str, bodies: Path, connections: int, seconds: int, *, threads: int = 1,
        cores: Sequence[int] | None = (LOAD_CORE,)) -> WrkResult:
    """Run wrk (POSTing the bodies round-robin) on the given cores and parse its report."""
    threads = max(1, min(threads, connections))
    command = stack.pinned(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
                       "-s", str(WRK_SCRIPT), url], cores if stack.cores() > 1 else None)
    done = subprocess.run(command, check=False, capture_output=True, text=True,
                          env={**os.environ, "GELOMBANG_BODIES": str(bodies)})
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return parse_wrk(done.stdout)


def write_bodies(path: Path, count: int) -> None:
    """A Lua table of distinct valid registration bodies."""
    factory = RegistrantFactory(seed=7)
    lines = ["return {"]
    for _ in range(count):
        lines.append("[==[" + orjson.dumps(factory.make().body()).decode() + "]==],")
    lines.append("}")
    path.write_text("\n".join(lines))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and its live children so far."""
    return cpu.family_seconds(cpu.processes(), pid)


# --- the contenders --------------------------------------------------------------------


class Contender:
    """A server under test, started on the server core(s) and stopped after its round."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], port: int,
                 admin_url: str | None = None, *, cores: Sequence[int] | None = (SERVER_CORE,),
                 reset: Callable[[], None] | None = None, clean: Callable[[], None] | None = None,
                 log: Path | None = None) -> None:
        self.name, self.command, self.env, self.port = name, command, env, port
        self.admin_url, self.cores, self.log = admin_url, cores, log
        # reset: before each measured run, the server up; clean: after it stopped.
        self.reset, self.clean = reset, clean
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Contender:
        output = self.log.open("ab") if self.log else None
        try:
            # Its own process group: whatever it starts (gelombang serve's door
            # processes) goes with it, even if it has to be killed.
            self.process = subprocess.Popen(stack.pinned(self.command, self.cores), env=self.env,
                                            cwd=stack.REPO_ROOT, stdout=output, stderr=output,
                                            start_new_session=True)
        finally:
            if output:
                output.close()
        stack.wait_http(f"http://127.0.0.1:{self.port}/v1/registrations", timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        stop_process(self.process.pid, signal.SIGTERM, 60.0, self.process)
        # A child left behind would take CPU from the next contender.
        kill_group(self.process.pid)

    def group_totals(self) -> tuple[float, float] | None:
        """The door's admission-group histogram (sum, count) so far, if it has one."""
        if self.admin_url is None:
            return None
        text = urllib.request.urlopen(self.admin_url + "/metrics", timeout=5).read().decode()
        total = re.search(r"^gelombang_admission_group_size_sum (\S+)$", text, re.M)
        count = re.search(r"^gelombang_admission_group_size_count (\S+)$", text, re.M)
        if not total or not count:
            return None
        return float(total.group(1)), float(count.group(1))


def mean_group(before: tuple[float, float] | None,
               after: tuple[float, float] | None) -> float | None:
    """Mean admission group size between two histogram readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def profile(contender: Contender, url: str, bodies: Path, connections: int,
            folder: Path, layout: Layout) -> Path | None:
    """Sample the door with py-spy while wrk loads it."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        print("py-spy not installed; skipping the profile", file=sys.stderr)
        return None
    assert contender.process is not None
    out = folder / "door-profile.txt"
    recorder = subprocess.Popen([str(spy), "record", "--pid", str(contender.process.pid),
                                 "--duration", "8", "--format", "raw", "--output", str(out),
                                 "--nonblocking"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    wrk(url, bodies, connections, 8, threads=layout.wrk_threads, cores=layout.load)
    recorder.wait(60)
    return out


def redis_flush(url: str) -> None:
    """Empty Redis between rounds so every round starts alike."""
    import redis

    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


def truncate_naive(dsn: str) -> None:
    """Empty the naive table, so no measured INSERT meets a row of an earlier run."""
    import asyncpg

    async def truncate() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            # When wrk stops, the server still holds requests queued for its pool;
            # their INSERTs would land after a TRUNCATE and refuse (409) the next
            # run's first registrations. Wait until the row count stands still.
            count = -1
            while True:
                now = await connection.fetchval("SELECT count(*) FROM naive_registrations")
                if now == count:
                    break
                count = now
                await asyncio.sleep(0.3)
            await connection.execute("TRUNCATE naive_registrations")
        finally:
            await connection.close()

    asyncio.run(truncate())


# --- the suite -------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How big a run is."""

    rounds: int
    seconds: int  # wrk takes whole seconds
    warmup_seconds: int
    connections: tuple[int, ...]
    bodies: int


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Plan]:
    """The suite's options, and the plan they make (`--tiny` overrides the sizes)."""
    parser = argparse.ArgumentParser(prog="gelombang bench door", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="per measured wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--bodies", type=int, default=100_000,
                        help="distinct registrations (the naive table refuses a repeat: 409)")
    parser.add_argument("--profile", action="store_true", help="also sample the door with py-spy")
    parser.add_argument("--appendfsync", choices=["always", "everysec", "no"], default="always",
                        help="Redis durability (the contract's setting is always)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: benchmarks/results/door-<UTC time>)")
    parser.add_argument("--tiny", action="store_true",
                        help="a few seconds in all: checks the harness, measures nothing")
    args = parser.parse_args(argv)
    if args.tiny:
        return args, Plan(1, 1, 0, (4, 16), 5_000)
    return args, Plan(args.rounds, args.seconds, 2, tuple(args.connections), args.bodies)


def exit_on_sigterm() -> None:
    """SIGTERM ends the suite through its `finally` blocks (servers stopped, scratch removed)."""
    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    """Run the door suite and write results.json, results.md and the chart."""
    args, plan = parse_args(argv)
    exit_on_sigterm()
    run = BenchRun("door", args.out, size="tiny" if args.tiny else "full")
    layout = Layout.for_cores(available_cores())
    scratch = Path(tempfile.mkdtemp(prefix="gelombang-bench-door-"))
    run.progress(f"{len(available_cores())} cores: server on {layout.server}, wrk on "
                 f"{layout.load}, Redis and PostgreSQL on {layout.services}")
    bodies = scratch / "bodies.lua"
    write_bodies(bodies, plan.bodies)
    redis = start_redis(scratch / "redis", appendfsync=args.appendfsync,
                        log_file=scratch / "redis.log")
    postgres = None
    try:
        stack.pin_family(redis.pid, layout.services)
        run.progress("starting a scratch PostgreSQL (fsync on) for the naive design")
        postgres = start_postgres(scratch / "postgres", fsync=True,
                                  log_file=scratch / "postgres.log")
        stack.pin_family(postgres.pid, layout.services)
        contenders = make_contenders(scratch, redis.url, postgres.dsn, layout)
        measure(run, contenders, plan, layout, bodies, args.profile)
    finally:
        redis.stop()
        if postgres is not None:
            postgres.stop()
            postgres.remove_data()
        for log in [*scratch.glob("*.log"), *scratch.glob("nginx/*.log")]:
            shutil.copy(log, run.folder / log.name)
        shutil.rmtree(scratch, ignore_errors=True)
    return report(run, plan, args.appendfsync, layout)


def make_contenders(scratch: Path, redis_url: str, dsn: str, layout: Layout) -> list[Contender]:
    """nginx, plain aiohttp, the door and the naive design, all on the same port."""
    port, admin_port = free_port(), free_port()
    config = stack.door_config(scratch / "door.toml", redis_url, port, admin_port,
                               rate_per_second=1e9, burst=1_000_000_000,
                               backlog_high_water=1_000_000_000)
    env = {**os.environ, "GELOMBANG_CONFIG": str(config)}
    python = sys.executable
    # Imported here: fastapi is a dev extra, and the other suites import this module.
    from benchmarks.baselines import naive_fastapi

    naive_env = {**env, naive_fastapi.DSN_ENV: dsn}
    return [
        Contender(NGINX, nginx.command(nginx.write_config(scratch / "nginx", port)), env, port,
                  cores=layout.server, log=scratch / "nginx-stdout.log"),
        Contender(AIOHTTP, [python, "-m", "benchmarks.baselines.plain_aiohttp", str(port)],
                  env, port, cores=layout.server),
        Contender(DOOR, [python, "-m", "intake.process"], env, port,
                  f"http://127.0.0.1:{admin_port}", cores=layout.server,
                  clean=lambda: redis_flush(redis_url), log=scratch / "door.log"),
        # Access log off, as for the door: a line per request would be the naive
        # design's cost of logging, not of its storage.
        Contender(NAIVE, [python, "-m", "uvicorn", "benchmarks.baselines.naive_fastapi:app",
                          "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
                          "--http", "httptools", "--no-access-log", "--log-level", "warning"],
                  naive_env, port, cores=layout.server, reset=lambda: truncate_naive(dsn),
                  log=scratch / "naive.log"),
    ]


def measure(run: BenchRun, contenders: list[Contender], plan: Plan, layout: Layout,
            bodies: Path, profiled: bool) -> None:
    """Every contender, alternately, at every connection count."""
    url = f"http://127.0.0.1:{contenders[0].port}"
    total = plan.rounds * len(contenders)
    for step, (number, contender) in enumerate(alternate(contenders, plan.rounds), 1):
        run.progress(f"round {number}/{plan.rounds}: {contender.name} ({step}/{total})")
        with contender:
            assert contender.process is not None
            if plan.warmup_seconds:
                wrk(url, bodies, max(plan.connections), plan.warmup_seconds,
                    threads=layout.wrk_threads, cores=layout.load)
            for connections in plan.connections:
                if contender.reset:
                    contender.reset()
                groups_before = contender.group_totals()
                cpu_before = cpu_seconds(contender.process.pid)
                found = wrk(url, bodies, connections, plan.seconds,
                            threads=layout.wrk_threads, cores=layout.load)
                # Over wrk's own measured time: loading its body table takes it
                # a moment before the load starts, while the server idles.
                server_cpu = (cpu_seconds(contender.process.pid) - cpu_before) / found.seconds
                group = mean_group(groups_before, contender.group_totals())
                figures = {"requests_per_second": found.requests_per_second,
                           "accepted_per_second": found.accepted_per_second,
                           "p50_ms": found.p50_ms, "p99_ms": found.p99_ms,
                           "non_2xx": float(found.non_2xx),
                           "socket_errors": float(found.socket_errors),
                           "server_cpu": server_cpu}
                if group is not None:
                    figures["mean_group_size"] = group
                run.record(contender.name, number, {"connections": connections}, **figures)
                run.progress(f"  {connections} connections: {found.accepted_per_second:,.0f} "
                             f"2xx/s, p50 {found.p50_ms:.2f} ms, p99 {found.p99_ms:.2f} ms, "
                             f"non-2xx {found.non_2xx}, server CPU {server_cpu:.2f}")
            if profiled and number == 1 and contender.name == DOOR:
                run.progress("  py-spy sample of the door (8 s)")
                profile(contender, url, bodies, plan.connections[0], run.folder, layout)
        if contender.clean:
            contender.clean()


# --- the report ------------------------------------------------------------------------


def ratios(medians: dict[str, dict[str, float]], connections: Sequence[int],
           figure: str = "accepted_per_second") -> dict[int, dict[str, float]]:
    """The door's figure over each other contender's, per connection count."""
    found: dict[int, dict[str, float]] = {}
    for count in connections:
        door = medians.get(f"{DOOR} @ {count}", {}).get(figure)
        found[count] = {}
        for other in (NGINX, AIOHTTP, NAIVE):
            theirs = medians.get(f"{other} @ {count}", {}).get(figure)
            if door is not None and theirs:
                found[count][other] = door / theirs
    return found


def door_cpu_us(medians: dict[str, dict[str, float]], count: int) -> float | None:
    """The door process's CPU per 2xx answer (each an admitted registration), in µs."""
    door = medians.get(f"{DOOR} @ {count}", {})
    accepted, cpu_share = door.get("accepted_per_second"), door.get("server_cpu")
    if not accepted or cpu_share is None:
        return None
    return cpu_share / accepted * 1e6


def table(medians: dict[str, dict[str, float]], connections: Sequence[int],
          by_count: dict[int, dict[str, float]]) -> str:
    """Contender x connections: 2xx/s, latency, server CPU and the door's ratios."""
    rows: list[list[Any]] = []
    for count in connections:
        for name in (NGINX, AIOHTTP, DOOR, NAIVE):
            figures = medians.get(f"{name} @ {count}")
            if figures is None:
                continue
            if name == DOOR:
                note = ", ".join(f"{value:.2f} x {other.split(' (')[0]}"
                                 for other, value in by_count[count].items())
                if "mean_group_size" in figures:
                    note += f"; mean group {figures['mean_group_size']:.1f}"
            else:
                ceiling = medians.get(f"{NGINX} @ {count}", {}).get("accepted_per_second")
                note = "" if name == NGINX or not ceiling else \
                    f"{figures['accepted_per_second'] / ceiling:.2f} x nginx"
            if figures.get("non_2xx"):
                note += f"{'; ' if note else ''}{figures['non_2xx']:.0f} non-2xx"
            rows.append([name, count, round(figures["accepted_per_second"]),
                         figures["p50_ms"], figures["p99_ms"], figures["server_cpu"], note])
    return markdown_table(["contender", "connections", "2xx/s", "p50 ms", "p99 ms",
                           "server CPU", "note"], rows)


def chart(run: BenchRun, medians: dict[str, dict[str, float]],
          connections: Sequence[int]) -> None:
    """Bars of 2xx/s per contender, one bar per connection count."""
    figure, axes = new_figure(8.0, 4.5)
    names = [NGINX, AIOHTTP, DOOR, NAIVE]
    width = 0.8 / len(connections)
    for index, count in enumerate(connections):
        values = [medians.get(f"{name} @ {count}", {}).get("accepted_per_second", 0.0)
                  for name in names]
        positions = [n + (index - (len(connections) - 1) / 2) * width for n in range(len(names))]
        bars = axes.bar(positions, values, width, label=f"{count} connections")
        axes.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=7)
    axes.set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
    axes.set_ylabel("answered 2xx per second (median)")
    axes.yaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
    axes.set_title("door suite: one server process on one core")
    axes.legend()
    save_figure(figure, run.plot_path("door-requests-per-second"))


def report(run: BenchRun, plan: Plan, appendfsync: str, layout: Layout) -> int:
    """Targets, table, chart, results.json and results.md."""
    medians = run.medians("connections")
    by_count = ratios(medians, plan.connections)
    for count in plan.connections:
        for other, goal in GOALS.items():
            if other in by_count[count]:
                run.target(f"door / {other.split(' (')[0]} at {count} connections",
                           by_count[count][other], goal, "higher", " x")
        cpu_us = door_cpu_us(medians, count)
        if cpu_us is not None:
            run.target(f"door CPU per admitted registration at {count} connections", cpu_us,
                       DOOR_CPU_GOAL_US, "lower", " µs")
    chart(run, medians, plan.connections)
    summary = {"medians": medians,
               "ratios": {str(count): values for count, values in by_count.items()}}
    notes = [f"wrk: {layout.wrk_threads} thread(s), {plan.seconds:g} s per run after a "
             f"{plan.warmup_seconds:g} s warm-up, {plan.bodies:,} distinct registrations "
             f"round-robin; Redis appendfsync {appendfsync}; PostgreSQL fsync on. "
             "2xx/s counts only 2xx answers (the naive design's 409s are not). "
             "Server CPU: cores the server process used while measured."]
    folder = run.finish(summary, table(medians, plan.connections, by_count), notes=notes,
                        figures=kept_figures.door(medians, plan.connections, DOOR),
                        parameters={"rounds": plan.rounds, "seconds": plan.seconds,
                                    "connections": list(plan.connections),
                                    "bodies": plan.bodies, "appendfsync": appendfsync,
                                    "server_cores": layout.server, "load_cores": layout.load,
                                    "service_cores": layout.services})
    return print_results(folder)


if __name__ == "__main__":
    sys.exit(main())
