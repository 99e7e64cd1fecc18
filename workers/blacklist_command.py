"""`gelombang blacklist import FILE --source NAME` and `gelombang blacklist show`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import asyncpg

from config.settings import Settings
from queueing.audit import audited_run, command_identity
from queueing.redis_client import connect
from queueing.sealing import KeyedHasher
from workers.blacklist import import_source
from workers.progress import ProgressBar


def register(subparsers: Any) -> None:
    """Add the `blacklist` subcommand."""
    parser = subparsers.add_parser("blacklist", help="import or show NIK blacklists")
    actions = parser.add_subparsers(dest="action", required=True)
    load = actions.add_parser("import", help="replace one source's list with a CSV of NIKs")
    load.add_argument("file", type=Path, help="CSV: one NIK per line, or a `nik` column")
    load.add_argument("--source", required=True, help="the list's name, e.g. taspen")
    load.set_defaults(handler=run_import)
    show = actions.add_parser("show", help="NIKs listed per source")
    show.set_defaults(handler=run_show)


def run_import(args: argparse.Namespace) -> int:
    """Import, then say how many were listed and which lines were refused (by number)."""
    settings = Settings.load()
    if not args.file.is_file():
        print(f"gelombang blacklist: no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_import(settings, args.file, args.source))
    except Exception as exc:
        # The type only: a message could quote a line of the file. The failure is
        # audited; the source's old list stays whole (one transaction).
        print(f"gelombang blacklist: import failed ({type(exc).__name__}); the list of "
              f"source {args.source} is unchanged", file=sys.stderr)
        return 1
    print(f"source {report.source}: {report.imported} NIKs listed "
          f"(replacing {report.replaced})")
    if report.bad_count:
        shown = ", ".join(map(str, report.bad_lines))
        more = " …" if report.bad_count > len(report.bad_lines) else ""
        print(f"{report.bad_count} lines without a well-formed NIK were skipped: "
              f"lines {shown}{more}", file=sys.stderr)
    return 0


async def _import(settings: Settings, path: Path, source: str) -> Any:
    who, where = command_identity()
    redis = connect(settings.redis, socket_timeout=settings.redis.timeout_seconds)
    try:
        # An admin action like any other: audited before the list changes, and its
        # outcome whatever it is (a failed run says why, by error type only).
        async with audited_run(redis, actor=who, source=where, action="blacklist.import",
                               details={"source": source, "file": path.name}) as run:
            run.describe = lambda: {"source": source}
            connection = await asyncpg.connect(settings.postgres.dsn)
            try:
                hasher = KeyedHasher(settings.keys.hash_key_bytes())
                progress = ProgressBar("reading", "bytes")
                report = await import_source(connection, path, source, hasher, progress)
            finally:
                await connection.close()
            run.describe = lambda: {"source": source, "listed": report.imported,
                                    "replaced": report.replaced, "bad_lines": report.bad_count}
        return report
    finally:
        await redis.aclose()


def run_show(args: argparse.Namespace) -> int:
    """NIKs listed per source, with the last import time."""
    settings = Settings.load()
    for row in asyncio.run(_sources(settings)):
        print(f"{row['source']}: {row['listed']} NIKs,"
              f" imported {row['imported_at']:%Y-%m-%d %H:%M}")
    return 0


async def _sources(settings: Settings) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(settings.postgres.dsn)
    try:
        return await connection.fetch(
            "SELECT source, count(*) AS listed, max(added_at) AS imported_at"
            " FROM nik_blacklist GROUP BY source ORDER BY source")
    finally:
        await connection.close()
