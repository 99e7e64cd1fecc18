"""The drain benchmark's PostgreSQL side: the raw COPY, checks, sizes, settings, statements."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import asyncpg

from benchmarks.workload import COLUMNS, Row
from gelombang.services import PostgresServer

REPORTED_SETTINGS: Final = (
    "server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_level",
    "shared_buffers", "wal_buffers", "max_wal_size", "checkpoint_timeout", "work_mem",
)
WORKER_TABLES: Final = "registrations, verification_handoffs, funnel_counts, dead_letters"
T = TypeVar("T")
INDEXES: Final = ("registrations_pkey", "registrations_first_nik", "registrations_first_email")


def superuser_dsn(server: PostgresServer) -> str:
    """The superuser on the application's database (CHECKPOINT, extensions)."""
    return server.admin_dsn.rsplit("/", 1)[0] + "/gelombang"


async def copy_rows(dsn: str, rows: Sequence[Row], batch_size: int, connections: int,
                    finish: Callable[[float], T]) -> T:
    """COPY the rows into `registrations`, one batch per transaction.

    `finish` gets the seconds it took, called while the connections are still open.
    """
    pool = [await asyncpg.connect(dsn) for _ in range(connections)]
    starts = iter(range(0, len(rows), batch_size))

    async def copier(connection: asyncpg.Connection) -> None:
        for start in starts:  # shared: each connection takes the next batch
            await connection.copy_records_to_table(
                "registrations", records=rows[start:start + batch_size], columns=COLUMNS)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(copier(connection) for connection in pool))
        return finish(time.perf_counter() - started)
    finally:
        for connection in pool:
            await connection.close()


async def settings(dsn: str) -> dict[str, str]:
    """The PostgreSQL settings the figures depend on, as the server reports them."""
    connection = await asyncpg.connect(dsn)
    try:
        return {name: await connection.fetchval("SELECT current_setting($1)", name)
                for name in REPORTED_SETTINGS}
    finally:
        await connection.close()


async def reset(server: PostgresServer, statements: bool) -> None:
    """Empty the worker tables, checkpoint, and zero the statement statistics."""
    connection = await asyncpg.connect(superuser_dsn(server))
    try:
        await connection.execute(f"TRUNCATE {WORKER_TABLES} CASCADE")
        await connection.execute("CHECKPOINT")
        if statements:
            await connection.execute("SELECT pg_stat_statements_reset()")
    finally:
        await connection.close()


def enable_statement_stats(server: PostgresServer) -> None:
    """Load pg_stat_statements (a restart) and create it in the application's database."""
    async def alter() -> None:
        connection = await asyncpg.connect(server.admin_dsn)
        try:
            await connection.execute(
                "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        finally:
            await connection.close()

    async def create() -> None:
        connection = await asyncpg.connect(superuser_dsn(server))
        try:
            await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        finally:
            await connection.close()

    asyncio.run(alter())
    server.stop()
    server.start()
    asyncio.run(create())


async def statement_stats(server: PostgresServer, top: int = 12) -> list[dict[str, Any]]:
    """The statements that took the most time in the backends (wall time, waits included)."""
    connection = await asyncpg.connect(superuser_dsn(server))
    try:
        # Grouped by text: a statement on a temp table has one query id per connection.
        rows = await connection.fetch(
            r"""SELECT left(regexp_replace(regexp_replace(query, '--[^\n]*\n', '', 'g'),
                                           '\s+', ' ', 'g'), 100) AS query,
                      sum(calls)::bigint AS calls, sum(total_exec_time) AS ms,
                      sum(rows)::bigint AS rows,
                      sum(total_exec_time) / sum(sum(total_exec_time)) OVER () AS share
                 FROM pg_stat_statements
                WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'gelombang')
                GROUP BY 1 ORDER BY 3 DESC LIMIT $1""", top)
        return [dict(row) for row in rows]
    finally:
        await connection.close()


async def sizes(dsn: str, count: int) -> dict[str, float]:
    """Bytes per row of `registrations`: in all, the heap (file, pages in use), each index."""
    connection = await asyncpg.connect(dsn)
    try:
        found = {
            "total": await connection.fetchval("SELECT pg_total_relation_size('registrations')"),
            "heap": await connection.fetchval("SELECT pg_relation_size('registrations')"),
            # Concurrent inserters make PostgreSQL extend the heap by up to 20 empty pages
            # per waiter at a time: at a few thousand rows that slack is a large, random
            # share of the file. The pages that hold a row are the heap's real cost.
            "heap_occupied": await connection.fetchval(
                "SELECT count(DISTINCT (ctid::text::point)[0]) * current_setting('block_size')::int"
                "  FROM registrations"),
            "toast_and_maps": await connection.fetchval(
                "SELECT pg_table_size('registrations') - pg_relation_size('registrations')"),
        }
        for index in INDEXES:
            found[index] = await connection.fetchval("SELECT pg_relation_size($1)", index)
    finally:
        await connection.close()
    figures: dict[str, float] = {f"{name}_bytes": float(value) for name, value in found.items()}
    figures.update({f"{name}_per_row": value / count for name, value in found.items()})
    return figures


async def stored(dsn: str, within: float = 60.0) -> dict[str, int]:
    """What the drain left in PostgreSQL, once the outbox is empty (or `within` passed)."""
    connection = await asyncpg.connect(dsn)
    try:
        for _ in range(int(within * 2)):
            # A deferred hand-off is relayed by the refill: wait for it, bounded.
            if not await connection.fetchval("SELECT count(*) FROM verification_handoffs"):
                break
            await asyncio.sleep(0.5)
        figures = {f"state_{row[0]}": row[1] for row in await connection.fetch(
            "SELECT state::text, count(*) FROM registrations GROUP BY 1")}
        figures["rows"] = await connection.fetchval("SELECT count(*) FROM registrations")
        figures["outbox"] = await connection.fetchval("SELECT count(*) FROM verification_handoffs")
        figures["dead_letters"] = await connection.fetchval("SELECT count(*) FROM dead_letters")
        figures["funnel_stored"] = await connection.fetchval(
            "SELECT coalesce(sum(value), 0)::bigint FROM funnel_counts WHERE name = 'stored'")
        return figures
    finally:
        await connection.close()
