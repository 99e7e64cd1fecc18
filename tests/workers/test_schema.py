"""Migrations: applied once, in order, safely from concurrent runs."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from database.schema import available, migrate
from gelombang.services import PostgresServer


@pytest.fixture
async def empty_database(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A new, empty database of its own, dropped afterwards."""
    name = f"migrate_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(postgres_server.admin_dsn)
    await admin.execute(f"CREATE DATABASE {name} OWNER gelombang")
    try:
        yield postgres_server.dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


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
