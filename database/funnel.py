"""Read-only queries over what the workers stored: funnel counters, registrations."""

from __future__ import annotations

import asyncpg


async def funnel_counts(connection: asyncpg.Connection | asyncpg.Pool) -> dict[str, int]:
    """Every funnel counter with a non-zero value, summed over the shards."""
    rows = await connection.fetch(
        "SELECT name, sum(value)::bigint AS value FROM funnel_counts GROUP BY name"
    )
    return {row["name"]: row["value"] for row in rows if row["value"]}
