"""Versioned schema migrations: numbered .sql files applied once, in order.

`database/migrations/NNNN_name.sql` files are applied in version order, each in
its own transaction together with its row in `schema_migrations`, so a failed
migration leaves nothing half-applied. An advisory lock makes concurrent
`gelombang migrate` runs (say, several workers starting at once) safe: the
second waits, then finds nothing left to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

import asyncpg

# The advisory lock key: "gelombang" as an int, any fixed number would do.
_LOCK_KEY: Final = 0x67656C6F6D62
_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    found = []
    for entry in resources.files("database.migrations").iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError("two migration files share a version number")
    return found


async def applied_versions(connection: asyncpg.Connection) -> set[int]:
    """Versions already applied (none when the bookkeeping table is missing)."""
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {row[0] for row in await connection.fetch("SELECT version FROM schema_migrations")}


async def migrate(dsn: str) -> list[Migration]:
    """Apply the migrations not yet applied; returns those it applied."""
    connection = await asyncpg.connect(dsn)
    applied: list[Migration] = []
    try:
        # Held for the whole run (released when the connection closes): with
        # a lock per migration, concurrent runs could interleave, each
        # applying some of them; now one applies all and the others find
        # nothing left to do.
        await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer     PRIMARY KEY,
                   name       text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        for migration in available():
            async with connection.transaction():
                if migration.version in await applied_versions(connection):
                    continue
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version, migration.name,
                )
                applied.append(migration)
    finally:
        await connection.close()
    return applied
