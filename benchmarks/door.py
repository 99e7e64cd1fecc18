"""Door benchmark: Gelombang's door against the plain aiohttp ceiling, same run.

One door process on core 0; wrk and Redis (AOF, appendfsync always) on core 1.
Contenders alternate (A B A B …) so drift on a noisy machine hits both.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from benchmarks import stack
from gelombang.processes import free_port
from gelombang.services import start_redis
from loadtest.registrants import RegistrantFactory

WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")
SERVER_CORE, LOAD_CORE = 0, 1


@dataclass
class Round:
    """One wrk run against one contender."""

    contender: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    # Share of one core the server process used while measured: near 1.0 means
    # it is CPU-bound; well below means it waits (on Redis's fsync, say).
    server_cpu: float
    mean_group_size: float | None = None


def write_bodies(path: Path, count: int) -> None:
    """A Lua table of distinct valid registration bodies."""
    factory = RegistrantFactory(seed=7)
    lines = ["return {"]
    for _ in range(count):
        lines.append("[==[" + orjson.dumps(factory.make().body()).decode() + "]==],")
    lines.append("}")
    path.write_text("\n".join(lines))


def _millis(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, bodies: Path, connections: int, seconds: int) -> dict[str, float]:
    """Run wrk on the load core and parse what it prints."""
    command = stack.pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                            "-s", str(WRK_SCRIPT), url], LOAD_CORE)
    out = subprocess.run(command, check=True, capture_output=True, text=True,
                         env={**os.environ, "GELOMBANG_BODIES": str(bodies)}).stdout
    found = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _millis(re.search(r"\s50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "p99": _millis(re.search(r"\s99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    found["non_2xx"] = float(non_2xx.group(1)) if non_2xx else 0.0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    found["socket_errors"] = float(sum(map(int, errors.groups()))) if errors else 0.0
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _group_size(admin_url: str) -> float | None:
    text = urllib.request.urlopen(admin_url + "/metrics", timeout=5).read().decode()
    total = re.search(r"^gelombang_admission_group_size_sum (\S+)$", text, re.M)
    count = re.search(r"^gelombang_admission_group_size_count (\S+)$", text, re.M)
    if not total or not count or float(count.group(1)) == 0:
        return None
    return float(total.group(1)) / float(count.group(1))


class Contender:
    """A server process under test, started pinned to the server core."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], port: int,
                 admin_url: str | None = None) -> None:
        self.name, self.command, self.env, self.port = name, command, env, port
        self.admin_url = admin_url
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Contender:
        self.process = subprocess.Popen(stack.pinned(self.command, SERVER_CORE), env=self.env,
                                        cwd=stack.REPO_ROOT)
        stack.wait_http(f"http://127.0.0.1:{self.port}/v1/registrations")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def profile(contender: Contender, url: str, bodies: Path, connections: int,
            folder: Path) -> Path | None:
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
    run_wrk(url, bodies, connections, 8)
    recorder.wait(60)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the door benchmark and write results.json and results.md."""
    parser = argparse.ArgumentParser(prog="gelombang-bench-door")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="also sample the door with py-spy")
    parser.add_argument("--appendfsync", choices=["always", "everysec", "no"], default="always",
                        help="Redis durability (the contract's setting is always)")
    args = parser.parse_args(argv)

    folder = stack.result_folder("door")
    scratch = Path(tempfile.mkdtemp(prefix="gelombang-bench-"))
    bodies = scratch / "bodies.lua"
    write_bodies(bodies, 20_000)
    redis = start_redis(scratch / "redis", appendfsync=args.appendfsync,
                        log_file=scratch / "redis.log")
    stack.pin_pid(redis.pid, LOAD_CORE)
    port, admin_port = free_port(), free_port()
    config = stack.door_config(scratch / "door.toml", redis.url, port, admin_port,
                               rate_per_second=1e9, burst=1_000_000_000,
                               backlog_high_water=1_000_000_000)
    env = {**os.environ, "GELOMBANG_CONFIG": str(config)}
    python = sys.executable
    contenders = [
        Contender("gelombang door", [python, "-m", "intake.process"], env, port,
                  f"http://127.0.0.1:{admin_port}"),
        Contender("plain aiohttp (ceiling)",
                  [python, "-m", "benchmarks.baselines.plain_aiohttp", str(port)], env, port),
    ]
    url = f"http://127.0.0.1:{port}"
    rounds: list[Round] = []
    try:
        for number in range(1, args.rounds + 1):
            for contender in contenders:
                print(f"round {number}/{args.rounds}: {contender.name} ...", flush=True)
                with contender:
                    run_wrk(url, bodies, args.connections, 2)  # warm-up
                    assert contender.process is not None
                    cpu_before = cpu_seconds(contender.process.pid)
                    found = run_wrk(url, bodies, args.connections, args.seconds)
                    cpu = (cpu_seconds(contender.process.pid) - cpu_before) / args.seconds
                    group = _group_size(contender.admin_url) if contender.admin_url else None
                    if args.profile and number == 1 and contender.admin_url:
                        profile(contender, url, bodies, args.connections, folder)
                rounds.append(Round(contender.name, found["rps"], found["p50"], found["p99"],
                                    int(found["non_2xx"]), int(found["socket_errors"]), cpu,
                                    group))
                print(f"  {found['rps']:.0f} req/s, p50 {found['p50']:.2f} ms, "
                      f"p99 {found['p99']:.2f} ms, non-2xx {int(found['non_2xx'])}, "
                      f"server cpu {cpu:.2f}"
                      + (f", mean group {group:.1f}" if group else ""), flush=True)
                redis_flush(redis.url)
    finally:
        redis.stop()
    summary = summarise(rounds)
    stack.write_json(folder / "results.json", {
        "suite": "door", "machine": stack.machine(), "connections": args.connections,
        "appendfsync": args.appendfsync,
        "seconds": args.seconds, "rounds": [asdict(r) for r in rounds], "summary": summary,
    })
    (folder / "results.md").write_text(markdown(summary, args.connections))
    print(markdown(summary, args.connections))
    print(f"results in {folder}")
    return 0


def redis_flush(url: str) -> None:
    """Empty Redis between rounds so every round starts alike."""
    import redis

    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


def summarise(rounds: list[Round]) -> dict[str, dict[str, float]]:
    """Median figures per contender, and the door's share of the ceiling."""
    summary: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r.contender for r in rounds):
        mine = [r for r in rounds if r.contender == name]
        summary[name] = {
            "requests_per_second": statistics.median(r.requests_per_second for r in mine),
            "p50_ms": statistics.median(r.p50_ms for r in mine),
            "p99_ms": statistics.median(r.p99_ms for r in mine),
            "server_cpu": statistics.median(r.server_cpu for r in mine),
        }
        groups = [r.mean_group_size for r in mine if r.mean_group_size]
        if groups:
            summary[name]["mean_group_size"] = statistics.median(groups)
    door, ceiling = summary["gelombang door"], summary["plain aiohttp (ceiling)"]
    door["ratio_to_ceiling"] = door["requests_per_second"] / ceiling["requests_per_second"]
    return summary


def markdown(summary: dict[str, dict[str, float]], connections: int) -> str:
    """The summary as a Markdown table."""
    lines = [f"| contender ({connections} connections) | req/s | p50 ms | p99 ms | server CPU "
             "| note |", "|---|---:|---:|---:|---:|---|"]
    for name, figures in summary.items():
        note = ""
        if "ratio_to_ceiling" in figures:
            note = f"{figures['ratio_to_ceiling']:.2f} x ceiling"
            if "mean_group_size" in figures:
                note += f", mean group {figures['mean_group_size']:.1f}"
        lines.append(f"| {name} | {figures['requests_per_second']:.0f} | "
                     f"{figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} | "
                     f"{figures['server_cpu']:.2f} | {note} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
