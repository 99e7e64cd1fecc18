"""Named SQL queries, kept in database/sql/*.sql: what the door and the workers run."""

from __future__ import annotations

import re
from importlib import resources

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A plain connection or one borrowed from a pool: both run the same queries.
Connection = asyncpg.Connection | PoolConnectionProxy

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load(file_name: str) -> dict[str, str]:
    """The queries of `database/sql/<file_name>`, by the name each starts with."""
    text = resources.files("database.sql").joinpath(file_name).read_text()
    parts = _NAME.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    queries = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    if not queries:
        raise ValueError(f"no named queries in {file_name}")
    return queries
