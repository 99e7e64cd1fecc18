"""`python -m benchmarks SUITE [options]`: one suite (`gelombang bench` runs several)."""

from __future__ import annotations

import importlib
import sys

from benchmarks.bench_command import SUITES

# Suites that `gelombang bench` does not run by default but that stay runnable on their own.
EXTRA_SUITES = {"verification": "benchmarks.verification",
                "verification-cpu": "benchmarks.verification_cpu"}


def main() -> int:
    """Dispatch to a suite's main()."""
    args = sys.argv[1:] or ["door"]
    modules = SUITES | EXTRA_SUITES
    if args[0] not in modules:
        print(f"usage: python -m benchmarks [{'|'.join(modules)}] [options]", file=sys.stderr)
        return 2
    suite = importlib.import_module(modules[args[0]])
    result: int = suite.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
