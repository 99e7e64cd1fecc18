"""The `gelombang` command: one entry point, a subcommand per role."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence

from config.settings import ConfigError
from queueing.redis_memory import EvictingRedis

# Each subcommand lives in its own module, which exposes `register(subparsers)`;
# the parser it adds carries `handler=<callable(args) -> int>`. Modules are
# imported lazily so `gelombang dev` does not pay for the door's imports.
SUBCOMMAND_MODULES: dict[str, str] = {
    "serve": "intake.serve_command",
    "admission": "intake.admission_command",
    "waves": "gelombang.waves_command",
    "status": "gelombang.status_command",
    "dev": "gelombang.devstack",
    "migrate": "workers.migrate_command",
    "worker": "workers.worker_command",
    "blacklist": "workers.blacklist_command",
    "dead-letters": "workers.dead_letters_command",
    "keys": "workers.keys_command",
    "mail-sink": "workers.sandbox.mail_sink",
    "nik-sim": "workers.sandbox.nik_sim",
    "surge": "loadtest.surge_command",
    "drill": "loadtest.drills.drill_command",
    "healthcheck": "gelombang.healthcheck",
    "bench": "benchmarks.bench_command",
    "plan": "gelombang.plan_command",
}

# Exit status for a start-up failure such as invalid configuration (as uvicorn).
EXIT_STARTUP_FAILURE = 3


def build_parser(names: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full parser, or only the named subcommands."""
    parser = argparse.ArgumentParser(prog="gelombang", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in names or SUBCOMMAND_MODULES:
        if importlib.util.find_spec(SUBCOMMAND_MODULES[name]) is None:
            continue  # a subcommand whose module is not written yet
        module = importlib.import_module(SUBCOMMAND_MODULES[name])
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = args_list[0] if args_list else None
    parser = build_parser([first] if first in SUBCOMMAND_MODULES else None)
    args = parser.parse_args(args_list)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"gelombang: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILURE
    except EvictingRedis as exc:
        print(f"gelombang: refusing to start: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(main())
