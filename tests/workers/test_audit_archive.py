"""The audit archive: it outlives an unexpected error, and the audit stream loses only
what is already in PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from queueing.audit import append_audit, audit_fields, queue_audit
from queueing.keys import AUDIT_STREAM
from tests.support import stream_range
from tests.workers.drain_helpers import drain_settings, running_drain
from tests.workers.verification_helpers import eventually
from workers.drain import audit_archive


async def archived(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM audit_log"))


async def append(redis: Redis, action: str) -> str:
    return await append_audit(redis, actor="test", source="here", action=action, details={})


@pytest.fixture
async def pool(migrated_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(migrated_dsn, min_size=1, max_size=1)
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def audit_table_away(pg: asyncpg.Connection) -> AsyncIterator[None]:
    """The audit_log table renamed: every insert into it fails (UndefinedTableError,
    not an outage), as a schema mistake or a bad entry would."""
    await pg.execute("ALTER TABLE audit_log RENAME TO audit_log_away")
    try:
        yield
    finally:
        await pg.execute("ALTER TABLE audit_log_away RENAME TO audit_log")


async def test_the_archive_is_restarted_after_an_unexpected_error_and_catches_up(
    pg: asyncpg.Connection, redis_client: Redis, test_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = drain_settings(test_settings)
    caplog.set_level(logging.ERROR, logger="gelombang.supervision")
    async with running_drain(settings):
        async with audit_table_away(pg):
            await append(redis_client, "first")

            async def failed() -> bool:
                return "audit archive failed (UndefinedTableError); restarting" in caplog.text

            await eventually(failed, within=10, what="the archive's failure logged")
            # Refused by PostgreSQL: still in the stream, nothing lost.
            assert await redis_client.xlen(AUDIT_STREAM) == 1
        await append(redis_client, "second")

        async def caught_up() -> bool:
            return await archived(pg) == 2

        # Before supervision the archive task died here, silently, for good.
        await eventually(caught_up, within=15, what="both entries archived")
    assert await redis_client.xlen(AUDIT_STREAM) == 0  # trimmed once archived


async def test_archiving_trims_the_stream_only_up_to_the_oldest_unarchived_entry(
    pg: asyncpg.Connection, redis_client: Redis, pool: asyncpg.Pool,
) -> None:
    await audit_archive.ensure_group(redis_client)
    ids = [await append(redis_client, f"action-{n}") for n in range(3)]
    # Another worker read the two oldest and died before committing them.
    await redis_client.xreadgroup(audit_archive.ARCHIVE_GROUP, "crashed", {AUDIT_STREAM: ">"},
                                  count=2)
    ids += [await append(redis_client, f"action-{n}") for n in range(3, 5)]

    assert await audit_archive.archive_once(redis_client, pool, "alive", count=100,
                                            block_ms=10, claim_idle_ms=60_000) == 3
    assert await archived(pg) == 3
    # The two the dead worker holds are not archived: nothing from them on is trimmed.
    left = [entry_id.decode() for entry_id, _ in await stream_range(redis_client, AUDIT_STREAM)]
    assert left == ids

    # Reclaimed, archived: now everything goes.
    assert await audit_archive.archive_once(redis_client, pool, "alive", count=100,
                                            block_ms=10, claim_idle_ms=0) == 2
    assert await archived(pg) == 5
    assert await redis_client.xlen(AUDIT_STREAM) == 0


async def test_the_door_never_trims_the_audit_stream_by_length(redis_client: Redis) -> None:
    # More entries than the stream's former cap (100,000), no archive running: all stay.
    total = 101_000
    fields = audit_fields(actor="test", source="here", action="admission.update", details={})
    for start in range(0, total, 10_000):
        async with redis_client.pipeline(transaction=False) as pipe:
            for _ in range(start, min(total, start + 10_000)):
                queue_audit(pipe, fields)
            await pipe.execute()
    await append(redis_client, "one more")
    assert await redis_client.xlen(AUDIT_STREAM) == total + 1
