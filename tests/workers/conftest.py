"""Fixtures shared by the schema and `gelombang migrate` tests."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

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
