"""Versioned schema migrations: numbered .sql files applied once, in order.

`database/migrations/NNNN_name.sql` files are applied in version order, each in
its own transaction together with its row in `schema_migrations`, so a failed
migration leaves nothing half-applied. An advisory lock makes concurrent
`gelombang migrate` runs (say, several workers starting at once) safe: the
second waits, then finds nothing left to do.

Each row keeps the SHA-256 of the file as applied. A shipped file whose content
no longer matches stops `migrate` and `migrate --wait-for-version` before they
do anything: the database holds what the old text did, and a changed file
would make two databases of "the same version" differ without anyone knowing.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Final, Literal

import asyncpg

# The advisory lock key: "gelombang" as an int, any fixed number would do.
_LOCK_KEY: Final = 0x67656C6F6D62
_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

_CREATE_TABLE: Final = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version    integer     PRIMARY KEY,
        name       text        NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())"""
# Added after databases already existed: nullable, and for rows applied before
# it the shipped file's checksum is recorded by the first `migrate` of a version
# that knows the column (trust on first use: an edit made before that upgrade
# cannot be detected; every edit after it is).
_ADD_CHECKSUM: Final = "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text"


class SchemaError(Exception):
    """The database's schema cannot be used by this release."""


class ChangedMigration(SchemaError):
    """An applied migration file's content differs from what was applied."""


class SchemaNotReady(SchemaError):
    """The database did not reach the needed schema version in time."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def file_name(self) -> str:
        """The file's name, as `gelombang migrate` reports it."""
        return f"{self.version:04d}_{self.name}.sql"

    @property
    def checksum(self) -> str:
        """SHA-256 (hex) of the file's text, as stored in schema_migrations."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Applied:
    """One row of schema_migrations."""

    version: int
    name: str
    checksum: str | None  # None: applied before checksums were kept, not yet recorded


ChecksumState = Literal["ok", "changed", "unrecorded"]


@dataclass(frozen=True, slots=True)
class FileStatus:
    """A shipped migration file against the database: what `migrate --status` prints."""

    migration: Migration
    applied: bool
    checksum: ChecksumState | None  # None while pending


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


def required_version() -> int:
    """The schema version this code needs: its highest migration file."""
    return available()[-1].version


async def applied_rows(connection: asyncpg.Connection) -> dict[int, Applied]:
    """schema_migrations by version (empty when the table is missing); reads only."""
    columns = {row[0] for row in await connection.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_name = 'schema_migrations' AND table_schema = current_schema()")}
    if not columns:
        return {}
    # A database last migrated by a release without checksums has no such column.
    checksum = "checksum" if "checksum" in columns else "NULL::text"
    rows = await connection.fetch(f"SELECT version, name, {checksum} FROM schema_migrations")
    return {row[0]: Applied(row[0], row[1], row[2]) for row in rows}


async def applied_versions(connection: asyncpg.Connection) -> set[int]:
    """Versions already applied (none when the bookkeeping table is missing)."""
    return set(await applied_rows(connection))


def file_statuses(rows: dict[int, Applied]) -> list[FileStatus]:
    """Each shipped file: applied or pending, and whether its checksum still matches."""
    statuses = []
    for migration in available():
        row = rows.get(migration.version)
        if row is None:
            statuses.append(FileStatus(migration, applied=False, checksum=None))
            continue
        state: ChecksumState = ("unrecorded" if row.checksum is None
                                else "ok" if row.checksum == migration.checksum else "changed")
        statuses.append(FileStatus(migration, applied=True, checksum=state))
    return statuses


def check_unchanged(rows: dict[int, Applied]) -> None:
    """Raise ChangedMigration (one line) for the first applied file whose content changed."""
    for status in file_statuses(rows):
        if status.checksum == "changed":
            migration = status.migration
            stored = rows[migration.version].checksum or ""
            raise ChangedMigration(
                f"migration {migration.file_name} changed after it was applied"
                f" (sha256 {stored[:12]} in the database, {migration.checksum[:12]} in this"
                " release): restore the file and put the change in a new migration")


async def migrate(dsn: str) -> list[Migration]:
    """Apply the migrations not yet applied; returns those it applied.

    Raises ChangedMigration, before applying anything, when an applied file changed.
    """
    connection = await asyncpg.connect(dsn)
    applied: list[Migration] = []
    try:
        # Held for the whole run (released when the connection closes): with
        # a lock per migration, concurrent runs could interleave, each
        # applying some of them; now one applies all and the others find
        # nothing left to do.
        await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await connection.execute(_CREATE_TABLE)
        await connection.execute(_ADD_CHECKSUM)
        rows = await applied_rows(connection)
        check_unchanged(rows)
        await connection.executemany(
            "UPDATE schema_migrations SET checksum = $2 WHERE version = $1 AND checksum IS NULL",
            [(status.migration.version, status.migration.checksum)
             for status in file_statuses(rows) if status.checksum == "unrecorded"])
        for migration in available():
            if migration.version in rows:
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum,
                )
            applied.append(migration)
    finally:
        await connection.close()
    return applied


async def read_applied(dsn: str, connect_seconds: float) -> dict[int, Applied]:
    """schema_migrations of the database at `dsn`, read without changing anything."""
    connection = await asyncpg.connect(dsn, timeout=connect_seconds)
    try:
        return await applied_rows(connection)
    finally:
        await connection.close()


async def wait_for_version(dsn: str, needed: int, *, wait_seconds: float, interval: float,
                           report: Callable[[str], None]) -> int:
    """Wait until the schema is at `needed` or later; returns the version found.

    Applies nothing (the migrate Job does): run before a door or worker starts, so
    a process never meets a schema older than its code. Reports each new state
    in one line; raises ChangedMigration at once, SchemaNotReady after `wait_seconds`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    last = ""
    while True:
        remaining = max(deadline - loop.time(), 0.1)
        try:
            rows = await read_applied(dsn, connect_seconds=min(interval * 2 + 1, remaining))
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            # PostgreSQL not up yet, or starting (CannotConnectNowError): keep waiting.
            state = f"database unreachable ({type(exc).__name__}: {exc})".replace("\n", " ")
        else:
            check_unchanged(rows)
            current = max(rows, default=0)
            if current >= needed:
                return current
            state = f"database at version {current}"
        if state != last:
            report(f"waiting for schema version {needed}: {state}")
            last = state
        if loop.time() >= deadline:
            raise SchemaNotReady(
                f"schema not at version {needed} after {wait_seconds:g} s ({state}):"
                " has the migrate Job run (`gelombang migrate`)?")
        # Polling: nothing tells a waiting pod that another pod's migration committed,
        # and a read every few seconds is nothing to PostgreSQL.
        await asyncio.sleep(min(interval, max(deadline - loop.time(), 0)))
