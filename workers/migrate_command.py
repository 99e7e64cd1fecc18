"""`gelombang migrate`: bring the PostgreSQL schema up to date, report it, or wait for it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from config.settings import Settings
from database.schema import (
    FileStatus,
    SchemaError,
    available,
    file_statuses,
    migrate,
    read_applied,
    required_version,
    wait_for_version,
)

# As gelombang.cli's: a changed migration or a schema that never arrived is a
# start-up failure (the init container fails, the pod does not start).
EXIT_STARTUP_FAILURE = 3
EXIT_PENDING = 1
# How often --wait-for-version reads schema_migrations.
WAIT_INTERVAL_SECONDS = 2.0


def register(subparsers: Any) -> None:
    """Add the `migrate` subcommand."""
    parser = subparsers.add_parser("migrate", help="apply pending schema migrations")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true",
                      help="list each migration file, applied or pending, with its checksum"
                           " state; exit 0 up to date, 1 pending, 3 a changed file")
    mode.add_argument("--wait-for-version", action="store_true",
                      help="apply nothing: wait until the schema is at least the version"
                           " this release ships (an init container runs this)")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                        help="how long --wait-for-version waits (default 600)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Apply, report or wait, as asked, on the configured database."""
    return execute(args, Settings.load().postgres.dsn)


def execute(args: argparse.Namespace, dsn: str) -> int:
    """Apply, report or wait on `dsn`; a SchemaError is one line and exit status 3."""
    try:
        if args.status:
            return _status(dsn)
        if args.wait_for_version:
            return _wait(dsn, args.timeout)
        return _apply(dsn)
    except SchemaError as exc:
        print(f"gelombang migrate: refusing to start: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILURE


def _apply(dsn: str) -> int:
    applied = asyncio.run(migrate(dsn))
    if not applied:
        print("schema up to date")
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    return 0


def _wait(dsn: str, timeout: float) -> int:
    needed = required_version()
    found = asyncio.run(wait_for_version(
        dsn, needed, wait_seconds=timeout, interval=WAIT_INTERVAL_SECONDS,
        report=lambda line: print(line, flush=True)))
    print(f"schema at version {found} (this release needs {needed})")
    return 0


_CHECKSUM_WORDS = {
    "ok": "checksum ok",
    "changed": "CHECKSUM CHANGED since applied",
    "unrecorded": "checksum not recorded yet (the next `gelombang migrate` records it)",
}


def _line(status: FileStatus) -> str:
    if not status.applied or status.checksum is None:
        return f"{status.migration.file_name:32} pending"
    return f"{status.migration.file_name:32} applied  {_CHECKSUM_WORDS[status.checksum]}"


def _status(dsn: str) -> int:
    rows = asyncio.run(read_applied(dsn, connect_seconds=10.0))
    statuses = file_statuses(rows)
    for status in statuses:
        print(_line(status))
    shipped = {migration.version for migration in available()}
    for version in sorted(set(rows) - shipped):
        # A newer release migrated this database; this code does not know the file.
        print(f"{version:04d}_{rows[version].name + '.sql':27} applied  not in this release")
    pending = [s for s in statuses if not s.applied]
    changed = [s for s in statuses if s.checksum == "changed"]
    print(f"schema at version {max(rows, default=0)}, this release needs {required_version()}:"
          f" {len(pending)} pending, {len(changed)} changed")
    if changed:
        return EXIT_STARTUP_FAILURE
    return EXIT_PENDING if pending else 0
