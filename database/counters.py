"""The funnel counters: moved in the transactions that change what they count."""

from __future__ import annotations

import random
from collections import Counter
from typing import Final

from database.queries import Connection, load

QUERIES: Final = load("store.sql")
# Funnel counters are spread over this many rows so batches do not queue on one lock.
COUNTER_SHARDS: Final = 64


def counter_shard() -> int:
    """A random shard, so concurrent batches do not queue on one row."""
    return random.randrange(COUNTER_SHARDS)


async def add_counts(connection: Connection, shard: int, counts: Counter[str]) -> None:
    """Move funnel counters (inside the caller's transaction)."""
    moved = {name: value for name, value in counts.items() if value}
    if moved:
        await connection.execute(
            QUERIES["add_counts"], shard, list(moved), list(moved.values())
        )
