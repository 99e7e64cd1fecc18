"""The door at several commits, alternately, on the door suite's layout.

    python -m benchmarks.door_ab [--rounds 5] [--connections 64] REV [REV ...]

Each REV is checked out (detached) into a scratch worktree, and its door runs
from there (`intake.process` imported from the checkout first) against the
same Redis, wrk load and bodies as the door suite, alternating with plain
aiohttp and with the working tree's own door, round after round; the medians
are printed. This VM moves a contender by ±25 % from one round to the next,
so a change to the door is read from medians of rounds that alternate, never
from two separate runs.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import door as suite
from benchmarks import stack
from benchmarks.harness import BenchRun
from gelombang.services import start_redis

WORKING_TREE = "working tree"


def checkout(revision: str, into: Path) -> Path:
    """A detached worktree of `revision` (removed by `forget`)."""
    subprocess.run(["git", "-C", str(stack.REPO_ROOT), "worktree", "add", "--quiet", "--detach",
                    str(into), revision], check=True)
    return into


def forget(worktree: Path) -> None:
    """Remove a scratch worktree."""
    subprocess.run(["git", "-C", str(stack.REPO_ROOT), "worktree", "remove", "--force",
                    str(worktree)], check=False)


def variant(door: suite.Contender, name: str, source: Path, config: Path) -> suite.Contender:
    """The door contender, its code imported from `source` first."""
    code = (f"import sys; sys.path.insert(0, {str(source)!r}); import runpy; "
            "runpy.run_module('intake.process', run_name='__main__')")
    chosen = copy.copy(door)
    chosen.name, chosen.command = name, [sys.executable, "-c", code]
    chosen.env = {**door.env, "GELOMBANG_CONFIG": str(config)}
    return chosen


def main(argv: list[str] | None = None) -> int:
    """Measure and print each door's median 2xx/s and CPU per answer."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.door_ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revisions", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args(argv)
    suite.exit_on_sigterm()
    plan = suite.Plan(rounds=args.rounds, seconds=args.seconds, warmup_seconds=2,
                      connections=(args.connections,), bodies=100_000)
    scratch = Path(tempfile.mkdtemp(prefix="gelombang-door-ab-"))
    run = BenchRun("door", scratch / "results", size="full")
    layout = suite.Layout.for_cores(suite.available_cores())
    bodies = scratch / "bodies.lua"
    suite.write_bodies(bodies, plan.bodies)
    redis = start_redis(scratch / "redis", appendfsync="always", log_file=scratch / "redis.log")
    worktrees: list[Path] = []
    try:
        stack.pin_family(redis.pid, layout.services)
        base = suite.make_contenders(scratch, redis.url, "postgresql://unused", layout)
        aiohttp = next(c for c in base if c.name == suite.AIOHTTP)
        door = next(c for c in base if c.name == suite.DOOR)
        # An older settings model may not know every table this one writes.
        config = scratch / "door.toml"
        older = scratch / "door-older.toml"
        older.write_text(re.sub(r"\[nice\][^\[]*", "", config.read_text()))
        contenders = [aiohttp, door]
        door.name = WORKING_TREE
        for number, revision in enumerate(args.revisions):
            worktrees.append(checkout(revision, scratch / f"rev-{number}"))
            contenders.append(variant(door, revision, worktrees[-1], older))
        suite.measure(run, contenders, plan, layout, bodies, False)
    finally:
        redis.stop()
        for worktree in worktrees:
            forget(worktree)
    print(f"\n{args.rounds} rounds, {args.connections} connections, {args.seconds} s each:")
    for name in [suite.AIOHTTP, WORKING_TREE, *args.revisions]:
        found = [m.figures for m in run.measurements if m.contender == name]
        rates = [f["accepted_per_second"] for f in found]
        cpu = statistics.median(f["server_cpu"] / f["accepted_per_second"] * 1e6 for f in found)
        print(f"  {name:40s} median {statistics.median(rates):>9,.0f} 2xx/s, "
              f"{cpu:5.0f} µs CPU per 2xx; rounds: {', '.join(f'{r:,.0f}' for r in rates)}")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
