"""`python -m benchmarks SUITE [options]`: run one benchmark suite."""

from __future__ import annotations

import importlib
import sys

SUITES = {"door": "benchmarks.door", "drain": "benchmarks.drain",
          "verification": "benchmarks.verification"}


def main() -> int:
    """Dispatch to a suite's main()."""
    args = sys.argv[1:] or ["door"]
    if args[0] not in SUITES:
        print(f"usage: python -m benchmarks [{'|'.join(SUITES)}] [options]", file=sys.stderr)
        return 2
    suite = importlib.import_module(SUITES[args[0]])
    result: int = suite.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
