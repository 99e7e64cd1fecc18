"""`gelombang drill [NAME ...]`: run fault drills against a whole stack of their own.

The drills start their own stack (real Redis, PostgreSQL, door, workers, mail
sink and NIK simulator on free loopback ports, state in `--state-dir`), so
they never disturb `make up`'s. Each prints a one-line verdict; the command
exits 1 if any drill broke the invariant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from config.settings import Settings
from gelombang.processes import ServiceError
from loadtest.drills.catalogue import drills
from loadtest.drills.runner import run_drill
from loadtest.drills.stack import DrillStack
from loadtest.drills.verdict import Verdict


def register(subparsers: Any) -> None:
    """Add `gelombang drill`."""
    parser = subparsers.add_parser(
        "drill", help="run fault drills against a stack of their own",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="drills to run (default: all; see --list)")
    parser.add_argument("--list", action="store_true", help="list the drills and exit")
    parser.add_argument("--count", type=int, default=2000, help="applicants per drill")
    parser.add_argument("--rate", type=float, default=400.0, help="applicants sent per second")
    parser.add_argument("--settle", type=float, default=180.0,
                        help="seconds to wait for every 202 to be stored and checked")
    parser.add_argument("--state-dir", type=Path, default=Path(".dev/drills"))
    parser.add_argument("--results", type=Path, help="write the verdicts here as JSON")
    parser.add_argument("--keep", action="store_true",
                        help="keep the state folder (logs, data) after the drills")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen drills; 0 if every one kept the invariant."""
    catalogue = drills(Settings.load())
    if args.list:
        for drill in catalogue.values():
            print(f"{drill.name:<20} {drill.what}")
        return 0
    unknown = [name for name in args.names if name not in catalogue]
    if unknown:
        print(f"gelombang drill: unknown drill {', '.join(unknown)} (see --list)",
              file=sys.stderr)
        return 2
    chosen = [catalogue[name] for name in args.names or catalogue]
    stack = DrillStack(args.state_dir)
    # SIGTERM stops the drills like Ctrl-C: the stack's processes (in
    # sessions of their own) are stopped, not orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    verdicts: list[Verdict] = []
    try:
        print(f"starting the drill stack in {args.state_dir}", flush=True)
        settings = stack.start()
        chosen = [drills(settings)[drill.name] for drill in chosen]
        for drill in chosen:
            print(f"{drill.name}: {drill.what}", flush=True)
            verdict = asyncio.run(run_drill(stack, drill, args.count, args.rate, args.settle))
            verdicts.append(verdict)
            print(verdict.line(), flush=True)
    except KeyboardInterrupt:
        print("gelombang drill: interrupted", file=sys.stderr)
        return 130
    except ServiceError as exc:
        print(f"gelombang drill: the stack failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.close(keep=args.keep)
        if args.results is not None:
            args.results.write_text(json.dumps([v.as_dict() for v in verdicts], indent=2))
    failed = [v.drill for v in verdicts if not v.ok]
    print(f"{len(verdicts) - len(failed)} of {len(verdicts)} drills kept the invariant"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
