"""Migrations: applied once, in order, safely from concurrent runs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gelombang.services import PostgresServer
from workers.schema import available, migrate


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
