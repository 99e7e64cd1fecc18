"""The admin audit archive, as the door's ops page reads it."""

from __future__ import annotations

from typing import Final

import asyncpg

from database.queries import load

QUERIES: Final = load("door.sql")


async def archived_page(pool: asyncpg.Pool, before: tuple[int, int] | None,
                        limit: int) -> list[asyncpg.Record]:
    """Archived entries, newest first, written before the `before` entry id."""
    first, second = before if before is not None else (None, None)
    return list(await pool.fetch(QUERIES["archived_audit_page"], first, second, limit))
