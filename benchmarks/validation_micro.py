"""`python -m benchmarks.validation_micro`: the door's decode + validate per valid body (~2 s).

Compares the one-pass path (`decode_registration`: msgspec's typed decode,
then the field rules) with orjson then the generic checks, which is what the
door did for every body before and still does for a body that fails the
typed decode. Made-up registrants; in process, no server. The rounds
alternate and the best of each is kept, as a shared machine is noisy.
"""

from __future__ import annotations

import datetime
import sys
import timeit
from collections.abc import Callable

import orjson

from intake.registration_body import decode_registration
from intake.validation import validate_registration
from loadtest.registrants import RegistrantFactory

TODAY = datetime.date(2026, 11, 22)
BODIES = 100
ROUNDS = 40
CALLS_PER_ROUND = 10


def _paths(bodies: list[bytes]) -> dict[str, Callable[[], None]]:
    def generic() -> None:
        for raw in bodies:
            validate_registration(orjson.loads(raw), TODAY)

    def one_pass() -> None:
        for raw in bodies:
            validate_registration(decode_registration(raw), TODAY)

    def orjson_decode() -> None:
        for raw in bodies:
            orjson.loads(raw)

    def typed_decode() -> None:
        for raw in bodies:
            decode_registration(raw)

    return {"orjson + generic checks": generic, "one pass (msgspec + rules)": one_pass,
            "decode only: orjson": orjson_decode, "decode only: typed": typed_decode}


def main(args: list[str]) -> int:
    """Print the best µs per body of each path."""
    factory = RegistrantFactory(seed=7, today=TODAY)
    bodies = [orjson.dumps(factory.make().body()) for _ in range(BODIES)]
    paths = _paths(bodies)
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(ROUNDS):
        for name, path in paths.items():
            seconds = timeit.timeit(path, number=CALLS_PER_ROUND)
            best[name] = min(best[name], seconds / (CALLS_PER_ROUND * BODIES))
    for name, seconds in best.items():
        print(f"{name:28s} {seconds * 1e6:6.2f} µs/body")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
