"""Migrations: applied once, in order, safely from concurrent runs; checksummed; awaited."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import uuid
from dataclasses import replace

import asyncpg
import pytest

from database.schema import (
    ChangedMigration,
    Migration,
    SchemaNotReady,
    applied_rows,
    available,
    file_statuses,
    migrate,
    required_version,
    wait_for_version,
)


def test_migration_files_are_numbered_from_one_without_gaps() -> None:
    versions = [migration.version for migration in available()]
    assert versions == list(range(1, len(versions) + 1))


async def test_concurrent_runs_apply_each_migration_once(empty_database: str) -> None:
    results = await asyncio.gather(*(migrate(empty_database) for _ in range(3)))

    assert sorted(len(applied) for applied in results) == [0, 0, len(available())]
    assert await migrate(empty_database) == []
    connection = await asyncpg.connect(empty_database)
    try:
        rows = await connection.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [row[0] for row in rows] == [m.version for m in available()]
        tables = {row[0] for row in await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"registrations", "nik_blacklist", "verification_handoffs", "funnel_counts",
                "dead_letters", "audit_log"} <= tables
    finally:
        await connection.close()


async def test_registrations_hold_no_plaintext_columns(pg: asyncpg.Connection) -> None:
    columns = {row[0] for row in await pg.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'registrations'")}
    assert not columns & {"nik", "full_name", "name", "email", "phone", "birth_date"}
    assert {"nik_hash", "email_hash", "sealed", "key_id"} <= columns


async def test_the_batch_outbox_migration_carries_over_the_old_outbox(
    empty_database: str,
) -> None:
    # A database as version 3 left it, with jobs still waiting in the old outbox.
    connection = await asyncpg.connect(empty_database)
    try:
        await connection.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())")
        for migration in available()[:3]:
            await connection.execute(migration.sql)
            await connection.execute("INSERT INTO schema_migrations VALUES ($1, $2)",
                                     migration.version, migration.name)
        ids = [uuid.uuid4() for _ in range(3)]
        await connection.execute(
            "INSERT INTO verification_outbox (registration_id, kind, partition)"
            " SELECT id, kind, p FROM unnest($1::uuid[], $2::smallint[]) AS o(id, p),"
            " unnest(enum_range(NULL::verification_kind)) AS kind", ids, [2, 2, 5])

        assert [m.version for m in await migrate(empty_database)][:2] == [4, 5]

        rows = await connection.fetch(
            "SELECT partition, registration_ids FROM verification_handoffs ORDER BY partition")
        assert [(row[0], sorted(row[1])) for row in rows] == [
            (2, sorted(ids[:2])), (5, [ids[2]])]
        assert await connection.fetchval("SELECT to_regclass('verification_outbox')") is None
    finally:
        await connection.close()


def _checksums(migrations: list[Migration]) -> dict[int, str]:
    return {migration.version: migration.checksum for migration in migrations}


async def _stored_checksums(dsn: str) -> dict[int, str | None]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT version, checksum FROM schema_migrations")
        return {row[0]: row[1] for row in rows}
    finally:
        await connection.close()


def _edited(version: int, extra: Migration | None = None) -> list[Migration]:
    """The shipped files with one of them edited (and one new file, if given)."""
    edited = [replace(m, sql=m.sql + "\n-- edited\n") if m.version == version else m
              for m in available()]
    return [*edited, extra] if extra else edited


async def test_each_applied_migration_records_the_sha256_of_its_file(empty_database: str) -> None:
    await migrate(empty_database)

    stored = await _stored_checksums(empty_database)
    assert stored == _checksums(available())
    first = available()[0]
    assert stored[first.version] == hashlib.sha256(first.sql.encode()).hexdigest()


async def test_a_changed_applied_migration_stops_migrate_before_it_applies_anything(
    empty_database: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await migrate(empty_database)
    new = Migration(len(available()) + 1, "never_applied", "CREATE TABLE never_applied (x int)")
    monkeypatch.setattr("database.schema.available", lambda: _edited(3, extra=new))

    with pytest.raises(ChangedMigration) as refused:
        await migrate(empty_database)

    message = str(refused.value)
    assert "0003_audit_order.sql changed after it was applied" in message
    assert "\n" not in message
    connection = await asyncpg.connect(empty_database)
    try:
        assert await connection.fetchval("SELECT to_regclass('never_applied')") is None
    finally:
        await connection.close()


async def test_migrations_applied_before_checksums_are_recorded_by_the_first_run(
    empty_database: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A database as a release without checksums left it: no checksum column.
    connection = await asyncpg.connect(empty_database)
    try:
        await connection.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())")
        for migration in available():
            await connection.execute(migration.sql)
            await connection.execute("INSERT INTO schema_migrations VALUES ($1, $2)",
                                     migration.version, migration.name)
        assert file_statuses(await applied_rows(connection))[0].checksum == "unrecorded"
    finally:
        await connection.close()

    assert await migrate(empty_database) == []

    assert await _stored_checksums(empty_database) == _checksums(available())
    # From then on an edit is caught.
    monkeypatch.setattr("database.schema.available", lambda: _edited(1))
    with pytest.raises(ChangedMigration, match=r"0001_registrations\.sql"):
        await migrate(empty_database)


async def test_waiting_for_the_version_returns_once_a_migration_elsewhere_commits(
    empty_database: str,
) -> None:
    lines: list[str] = []
    needed = required_version()

    async def migrate_soon() -> None:
        await asyncio.sleep(0.3)
        await migrate(empty_database)

    found, _ = await asyncio.gather(
        wait_for_version(empty_database, needed, wait_seconds=30, interval=0.1,
                         report=lines.append),
        migrate_soon())

    assert found == needed
    # One line per state, not one per read (the migration may be seen half-way too).
    assert lines[0] == f"waiting for schema version {needed}: database at version 0"
    assert len(lines) == len(set(lines)) <= needed
    connection = await asyncpg.connect(empty_database)
    try:
        assert await connection.fetchval("SELECT count(*) FROM schema_migrations") == needed
    finally:
        await connection.close()


async def test_waiting_applies_nothing_and_gives_up_after_its_time(empty_database: str) -> None:
    lines: list[str] = []
    with pytest.raises(SchemaNotReady, match=r"schema not at version 99 after 0\.5 s"):
        await wait_for_version(empty_database, 99, wait_seconds=0.5, interval=0.1,
                               report=lines.append)
    assert lines == ["waiting for schema version 99: database at version 0"]
    connection = await asyncpg.connect(empty_database)
    try:
        assert await connection.fetchval("SELECT to_regclass('schema_migrations')") is None
    finally:
        await connection.close()


async def test_waiting_reports_an_unreachable_database_and_keeps_trying() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    lines: list[str] = []
    with pytest.raises(SchemaNotReady, match="database unreachable"):
        await wait_for_version(f"postgresql://nobody@127.0.0.1:{port}/none", 1,
                               wait_seconds=0.5, interval=0.1, report=lines.append)
    assert len(lines) == 1 and "database unreachable" in lines[0]


async def test_waiting_refuses_at_once_when_an_applied_file_changed(
    migrated_dsn: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("database.schema.available", lambda: _edited(2))
    with pytest.raises(ChangedMigration, match=r"0002_verification\.sql"):
        await wait_for_version(migrated_dsn, 1, wait_seconds=30, interval=0.1,
                               report=print)
