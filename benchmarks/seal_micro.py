"""`python -m benchmarks.seal_micro`: sealing one registration into its stream entry (~3 s).

Compares the door's path (`sealed_entry`: the fields sealed and packed once)
with `seal_registration(...).encode()` (an Envelope between), which the door
used before and tests and benchmarks still use where they want the Envelope.
Fresh random keys, one made-up registrant; in process. The rounds alternate
and the best of each is kept, as a shared machine is noisy.
"""

from __future__ import annotations

import datetime
import os
import sys
import timeit
from collections.abc import Callable

from queueing.envelope import PersonalData, seal_registration, sealed_entry
from queueing.ids import uuid7_bytes
from queueing.sealing import KeyedHasher, Sealer

ROUNDS = 20
CALLS_PER_ROUND = 5_000


def main() -> int:
    """Print the best µs per registration of each path."""
    sealer = Sealer({"k1": os.urandom(32)}, "k1")
    addresses = Sealer({"a1": os.urandom(32)}, "a1")
    hasher = KeyedHasher(os.urandom(32))
    person = PersonalData("3171014501900001", "Siti Aminah", "siti@example.co.id",
                          "+6281234567890", datetime.date(1990, 1, 5))
    rid, at_ms = uuid7_bytes(), 1_700_000_000_000

    def with_envelope() -> None:
        envelope = seal_registration(person, rid, at_ms, sealer, hasher, addresses)
        envelope.encode()

    def entry_only() -> None:
        sealed_entry(person, rid, at_ms, sealer, hasher, addresses)

    paths: dict[str, Callable[[], None]] = {
        "sealed_entry (the door)": entry_only,
        "seal_registration + encode": with_envelope,
    }
    best = {name: float("inf") for name in paths}
    for _ in range(ROUNDS):
        for name, path in paths.items():
            seconds = timeit.timeit(path, number=CALLS_PER_ROUND)
            best[name] = min(best[name], seconds / CALLS_PER_ROUND * 1e6)
    for name, micros in best.items():
        print(f"{name:30s} {micros:6.2f} µs per registration")
    return 0


if __name__ == "__main__":
    sys.exit(main())
