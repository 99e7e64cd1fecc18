"""`gelombang bench [SUITE …]`: the benchmark suites, one after another, in one results folder.

Each suite runs as its own process (`python -m benchmarks SUITE --out DIR`),
so one that fails leaves the others' figures intact; the command then joins
their results into `results.json` and `results.md` at the top of the folder.
A missed target is a figure, not a failure: the exit status is 1 only when a
suite itself failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import stack

# In the order a full run takes them: the quick HTTP ceilings first, the long
# end-to-end wave last. Each module has `main(argv) -> int` and accepts
# `--out DIR` and `--tiny` (a few seconds, for the harness's own tests).
SUITES: dict[str, str] = {
    "door": "benchmarks.door",
    "latency": "benchmarks.latency",
    "scale": "benchmarks.scale",
    "memory": "benchmarks.memory",
    "drain": "benchmarks.drain",
    "wave": "benchmarks.wave",
}


def register(subparsers: Any) -> None:
    """Add `gelombang bench` to the command line."""
    parser = subparsers.add_parser(
        "bench", help="run the benchmark suites side by side and write their results",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"suites to run (default: all): {', '.join(SUITES)}")
    parser.add_argument("--tiny", action="store_true",
                        help="a few seconds per suite: checks the harness, measures nothing")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: benchmarks/results/bench-<UTC time>)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen suites in order and join their results."""
    unknown = [name for name in args.suites if name not in SUITES]
    if unknown:
        print(f"gelombang bench: unknown suite(s) {', '.join(unknown)}; "
              f"choose from {', '.join(SUITES)}", file=sys.stderr)
        return 2
    chosen = args.suites or list(SUITES)
    folder: Path = args.out or stack.result_folder("bench")
    folder.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, int] = {}
    for number, name in enumerate(chosen, 1):
        print(f"== {number}/{len(chosen)} {name}", file=sys.stderr, flush=True)
        command = [sys.executable, "-m", "benchmarks", name, "--out", str(folder / name)]
        if args.tiny:
            command.append("--tiny")
        started = time.monotonic()
        outcomes[name] = subprocess.run(command, cwd=stack.REPO_ROOT).returncode
        print(f"== {name}: exit {outcomes[name]} after {time.monotonic() - started:.0f} s",
              file=sys.stderr, flush=True)
    join_results(folder, chosen, outcomes)
    print(f"results in {folder}", flush=True)
    return 0 if all(code == 0 for code in outcomes.values()) else 1


def join_results(folder: Path, suites: list[str], outcomes: dict[str, int]) -> None:
    """One results.json and one results.md for the whole run."""
    joined: dict[str, Any] = {"machine": stack.machine(), "suites": {}, "exit_status": outcomes}
    sections = ["# Gelombang benchmarks", "",
                f"`gelombang bench {' '.join(suites)}`, finished "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    targets: list[str] = []
    for name in suites:
        result = folder / name / "results.json"
        if outcomes.get(name) != 0 or not result.exists():
            sections += [f"## {name}", "", f"failed (exit {outcomes.get(name)}); "
                         f"see the suite's output above.", ""]
            continue
        document = json.loads(result.read_text())
        joined["suites"][name] = document
        text = (folder / name / "results.md").read_text()
        # The suite's images live in its own folder.
        for plot in document.get("plots", []):
            text = text.replace(f"]({plot})", f"]({name}/{plot})")
        sections += [text, ""]
        targets += [f"| {name}: {t['name']} | {t['value']:.4g} | "
                    f"{'>=' if t['better'] == 'higher' else '<='} {t['goal']:.4g} | "
                    f"{'met' if t['met'] else 'NOT met'} |" for t in document.get("targets", [])]
    if targets:
        sections[4:4] = ["| target | this run | goal | |", "|---|---:|---:|---|", *targets, ""]
    stack.write_json(folder / "results.json", joined)
    (folder / "results.md").write_text("\n".join(sections).rstrip("\n") + "\n")
