"""`gelombang migrate --status` and `--wait-for-version`, on a real PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import replace

import asyncpg
import pytest

from database.schema import available, migrate, required_version
from gelombang.cli import build_parser
from workers.migrate_command import execute


def _args(*argv: str) -> argparse.Namespace:
    return build_parser(["migrate"]).parse_args(["migrate", *argv])


async def _run(dsn: str, *argv: str) -> int:
    # The command runs its own event loop (asyncio.run), so off this test's loop.
    return await asyncio.to_thread(execute, _args(*argv), dsn)


async def _apply_first(dsn: str, count: int) -> None:
    # As an older release would have left it: the first `count` files applied.
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())")
        for migration in available()[:count]:
            await connection.execute(migration.sql)
            await connection.execute("INSERT INTO schema_migrations VALUES ($1, $2)",
                                     migration.version, migration.name)
    finally:
        await connection.close()


def test_wait_and_status_are_options_of_migrate_and_exclude_each_other() -> None:
    assert _args("--wait-for-version", "--timeout", "5").timeout == 5.0
    with pytest.raises(SystemExit):
        _args("--status", "--wait-for-version")


async def test_status_lists_applied_pending_and_unrecorded_files(
    empty_database: str, capsys: pytest.CaptureFixture[str],
) -> None:
    await _apply_first(empty_database, 2)

    assert await _run(empty_database, "--status") == 1  # something pending

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["0001_registrations.sql", "applied", "checksum", "not",
                                "recorded", "yet", "(the", "next", "`gelombang", "migrate`",
                                "records", "it)"]
    assert lines[2].split() == ["0003_audit_order.sql", "pending"]
    assert lines[-1] == (f"schema at version 2, this release needs {required_version()}:"
                         f" {required_version() - 2} pending, 0 changed")


async def test_status_after_migrate_is_up_to_date_and_flags_a_changed_file(
    empty_database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    await migrate(empty_database)
    assert await _run(empty_database, "--status") == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(line.endswith("applied  checksum ok") for line in lines[:-1])

    edited = [replace(m, sql=m.sql + " ") if m.version == 4 else m for m in available()]
    monkeypatch.setattr("database.schema.available", lambda: edited)
    assert await _run(empty_database, "--status") == 3
    out = capsys.readouterr().out
    assert "0004_handoff_batches.sql         applied  CHECKSUM CHANGED since applied" in out


async def test_wait_for_version_succeeds_at_once_on_a_migrated_database(
    empty_database: str, capsys: pytest.CaptureFixture[str],
) -> None:
    await migrate(empty_database)
    assert await _run(empty_database, "--wait-for-version", "--timeout", "5") == 0
    needed = required_version()
    assert capsys.readouterr().out == f"schema at version {needed} (this release needs {needed})\n"


async def test_wait_for_version_fails_with_one_line_and_exit_3_when_the_schema_stays_old(
    empty_database: str, capsys: pytest.CaptureFixture[str],
) -> None:
    await _apply_first(empty_database, 2)

    assert await _run(empty_database, "--wait-for-version", "--timeout", "0.3") == 3

    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"waiting for schema version {required_version()}: database at version 2"]
    (error,) = captured.err.splitlines()
    assert error.startswith("gelombang migrate: refusing to start: schema not at version")
