"""`gelombang keys reseal`: stored data moves to the active sealing key, in batches,
readable throughout, resumable, alongside workers that write the same rows."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from gelombang.processes import free_port
from gelombang.services import postgres_dsn
from loadtest.registrants import Registrant, RegistrantFactory
from queueing.envelope import PersonalData, open_address, open_sealed
from queueing.keys import AUDIT_STREAM
from queueing.sealing import Sealer
from tests.support import REPO_ROOT, seal_people, stream_range, write_config
from tests.workers.drain_helpers import drain_settings, enqueue, running_drain, wait_drained
from workers.progress import ProgressBar
from workers.reseal import reseal_addresses, reseal_registrations

NEW_KEY = base64.b64encode(os.urandom(32)).decode()
NEW_ADDRESS_KEY = base64.b64encode(os.urandom(32)).decode()


def rotated(settings: Settings, *, keep_old: bool = True) -> Settings:
    """The settings after a rotation to key id `new` (the old key kept, or not)."""
    old = dict(settings.keys.sealing_keys) if keep_old else {}
    keys = settings.keys.model_copy(update={"active_sealing_key_id": "new",
                                            "sealing_keys": {**old, "new": NEW_KEY}})
    return settings.model_copy(update={"keys": keys})


def rotated_addresses(settings: Settings, *, keep_old: bool = True) -> Settings:
    """The settings after an address key rotation to key id `a2`."""
    old = dict(settings.keys.address_keys) if keep_old else {}
    keys = settings.keys.model_copy(update={"active_address_key_id": "a2",
                                            "address_keys": {**old, "a2": NEW_ADDRESS_KEY}})
    return settings.model_copy(update={"keys": keys})


def without_address_keys(settings: Settings) -> Settings:
    """An older door's settings: its envelopes carry no sealed address (version 1)."""
    keys = settings.keys.model_copy(update={"active_address_key_id": "", "address_keys": {}})
    return settings.model_copy(update={"keys": keys})


def address_sealer_of(settings: Settings) -> Sealer:
    return Sealer(settings.keys.address_key_bytes(), settings.keys.active_address_key_id)


def sealer_of(settings: Settings) -> Sealer:
    return Sealer(settings.keys.sealing_key_bytes(), settings.keys.active_sealing_key_id)


async def store(redis: Redis, settings: Settings, people: list[Registrant]) -> None:
    """Through the real drain, sealed as the door seals with the settings' active key."""
    settings = drain_settings(settings)
    await enqueue(redis, settings, seal_people(settings, people))
    async with running_drain(settings):
        await wait_drained(redis, settings)


async def opened(pg: asyncpg.Connection, sealer: Sealer) -> dict[uuid.UUID, PersonalData]:
    rows = await pg.fetch("SELECT registration_id, key_id, sealed FROM registrations")
    return {row[0]: open_sealed(sealer, row[0].bytes, row[1], row[2]) for row in rows}


def same_data(left: dict[uuid.UUID, PersonalData], right: dict[uuid.UUID, PersonalData]) -> bool:
    # Compared here, not in an assert, so a failure never prints the values.
    return left.keys() == right.keys() and all(
        (a.nik, a.full_name, a.email, a.phone, a.birth_date)
        == (b.nik, b.full_name, b.email, b.phone, b.birth_date)
        for a, b in ((left[k], right[k]) for k in left))


async def counted(pg: asyncpg.Connection, query: str) -> dict[str, int]:
    return {row[0]: row[1] for row in await pg.fetch(query)}


@pytest.fixture
async def pool(migrated_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(migrated_dsn, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def test_reseal_moves_every_row_to_the_active_key_in_batches(
    pg: asyncpg.Connection, pool: asyncpg.Pool, redis_client: Redis, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    await store(redis_client, test_settings, [registrants.make() for _ in range(30)])
    before = await opened(pg, sealer_of(test_settings))
    other_columns = await pg.fetch(
        "SELECT registration_id, state, email_verification, nik_verification, nik_hash,"
        " email_hash, updated_at FROM registrations ORDER BY registration_id")
    seen: list[tuple[int, int]] = []

    report = await reseal_registrations(pool, sealer_of(rotated(test_settings)), batch_size=7,
                                        progress=lambda done, total: seen.append((done, total)))

    assert (report.resealed, report.batches, report.unreadable) == (30, 5, 0)
    assert report.left == {}
    assert seen == [(0, 30), (7, 30), (14, 30), (21, 30), (28, 30), (30, 30)]
    assert {row[0] for row in await pg.fetch("SELECT DISTINCT key_id FROM registrations")} == {
        "new"}
    # Readable with the new key alone: the old one can be retired.
    after = await opened(pg, sealer_of(rotated(test_settings, keep_old=False)))
    assert same_data(before, after)
    assert await pg.fetch(
        "SELECT registration_id, state, email_verification, nik_verification, nik_hash,"
        " email_hash, updated_at FROM registrations ORDER BY registration_id") == other_columns
    # A second run finds nothing to do.
    again = await reseal_registrations(pool, sealer_of(rotated(test_settings)), batch_size=7)
    assert (again.resealed, again.batches) == (0, 0)


async def test_reseal_rotates_the_address_key_and_seals_older_rows_addresses(
    pg: asyncpg.Connection, pool: asyncpg.Pool, redis_client: Redis, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    await store(redis_client, test_settings, [registrants.make() for _ in range(4)])
    await store(redis_client, without_address_keys(test_settings),
                [registrants.make() for _ in range(3)])
    assert await counted(pg, "SELECT coalesce(address_key_id, '-'), count(*)"
                             " FROM registrations GROUP BY 1") == {"a1": 4, "-": 3}
    blobs_query = "SELECT registration_id, key_id, sealed FROM registrations ORDER BY 1"
    blobs = await pg.fetch(blobs_query)

    report = await reseal_addresses(pool, address_sealer_of(rotated_addresses(test_settings)),
                                    sealer_of(test_settings), batch_size=3)

    assert (report.key_id, report.resealed, report.batches, report.unreadable) == (
        "a2", 7, 3, 0)
    assert report.left == {}
    # Readable with the new address key alone, each the address its full blob holds.
    new_only = address_sealer_of(rotated_addresses(test_settings, keep_old=False))
    rows = await pg.fetch("SELECT registration_id, address_key_id, sealed_address, key_id,"
                          " sealed FROM registrations")
    assert {row["address_key_id"] for row in rows} == {"a2"}
    matching = sum(
        open_address(new_only, row[0].bytes, row[1], row[2])
        == open_sealed(sealer_of(test_settings), row[0].bytes, row[3], row[4]).email
        for row in rows)
    assert matching == 7
    # The full blobs are not touched by the address pass.
    assert blobs == await pg.fetch(blobs_query)
    again = await reseal_addresses(pool, address_sealer_of(rotated_addresses(test_settings)),
                                   sealer_of(test_settings), batch_size=3)
    assert (again.resealed, again.batches) == (0, 0)


class Interrupted(Exception):
    """Stands for Ctrl-C between two batches."""


async def test_an_interrupted_reseal_resumes_where_it_stopped(
    pg: asyncpg.Connection, pool: asyncpg.Pool, redis_client: Redis, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    await store(redis_client, test_settings, [registrants.make() for _ in range(20)])
    sealer = sealer_of(rotated(test_settings))

    def stop_after_two_batches(done: int, total: int) -> None:
        if done >= 10:
            raise Interrupted

    with pytest.raises(Interrupted):
        await reseal_registrations(pool, sealer, batch_size=5, progress=stop_after_two_batches)
    counts = await counted(pg, "SELECT key_id, count(*) FROM registrations GROUP BY key_id")
    assert counts == {"new": 10, "test1": 10}  # two batches committed, nothing half-done

    report = await reseal_registrations(pool, sealer, batch_size=5)
    assert (report.resealed, report.batches) == (10, 2)
    assert await pg.fetchval("SELECT count(*) FROM registrations WHERE key_id <> 'new'") == 0


_MARK_SENT = """
WITH locked AS MATERIALIZED (
    SELECT registration_id FROM registrations WHERE registration_id = ANY($1::uuid[])
     ORDER BY registration_id FOR NO KEY UPDATE
)
UPDATE registrations AS r SET email_verification = 'sent', updated_at = now()
  FROM locked WHERE r.registration_id = locked.registration_id
"""


async def test_reseal_runs_while_workers_update_the_same_rows(
    pg: asyncpg.Connection, pool: asyncpg.Pool, redis_client: Redis, test_settings: Settings,
    registrants: RegistrantFactory, migrated_dsn: str,
) -> None:
    await store(redis_client, test_settings, [registrants.make() for _ in range(60)])
    before = await opened(pg, sealer_of(test_settings))
    ids = sorted(before)

    async def worker_marks_emails_sent() -> None:
        # As the email worker does: status columns of the rows being re-sealed,
        # locked in id order first (a plain UPDATE … ANY() locks in scan order
        # and deadlocks with the re-seal's ordered batch now and then).
        connection = await asyncpg.connect(migrated_dsn)
        try:
            for start in range(0, len(ids), 3):
                await connection.execute(_MARK_SENT, ids[start:start + 3])
                await asyncio.sleep(0)
        finally:
            await connection.close()

    worker = asyncio.create_task(worker_marks_emails_sent())
    report = await reseal_registrations(pool, sealer_of(rotated(test_settings)), batch_size=4)
    await worker
    assert report.resealed == 60
    assert await counted(
        pg, "SELECT key_id || '/' || email_verification::text, count(*) FROM registrations"
        " GROUP BY 1") == {"new/sent": 60}
    assert same_data(before, await opened(pg, sealer_of(rotated(test_settings))))


async def test_rows_whose_key_is_gone_are_counted_and_left(
    pg: asyncpg.Connection, pool: asyncpg.Pool, redis_client: Redis, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    await store(redis_client, test_settings, [registrants.make() for _ in range(6)])
    await pg.execute("UPDATE registrations SET key_id = 'lost' WHERE registration_id IN"
                     " (SELECT registration_id FROM registrations ORDER BY 1 LIMIT 2)")
    report = await reseal_registrations(pool, sealer_of(rotated(test_settings)), batch_size=4)
    assert (report.resealed, report.unreadable) == (4, 2)
    assert report.left == {"lost": 2}


def test_progress_bar_redraws_one_line_on_a_terminal() -> None:
    out = io.StringIO()
    bar = ProgressBar("resealing", "rows", stream=out, tty=True)
    for done in (0, 500, 1000):
        bar(done, 1000)
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "1,000/1,000 rows 100.0%" in text
    plain = io.StringIO()
    quiet = ProgressBar("resealing", "rows", stream=plain, tty=False)
    for done in range(0, 1001, 50):
        quiet(done, 1000)
    assert "\r" not in plain.getvalue()
    assert len(plain.getvalue().splitlines()) == 11  # one line per tenth


async def test_the_command_reseals_prints_a_final_count_and_is_audited(
    pg: asyncpg.Connection, redis_client: Redis, test_settings: Settings,
    registrants: RegistrantFactory, tmp_path: Path,
) -> None:
    await store(redis_client, test_settings, [registrants.make() for _ in range(12)])
    config = tmp_path / "rotated.toml"
    write_config(rotated(test_settings), config, 0, 0)
    env = {**os.environ, "GELOMBANG_CONFIG": str(config)}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gelombang", "keys", "reseal", "--batch-size", "5"],
        cwd=REPO_ROOT, env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()[-500:]
    assert done.stdout.decode().strip().splitlines() == [
        "resealed 12 registrations with key id 'new' in 3 batches; unreadable: 0;"
        " left under other key ids: 0",
        # The addresses were sealed with the active address key already.
        "resealed 0 addresses with key id 'a1' in 0 batches; unreadable: 0;"
        " left under other key ids: 0"]
    assert "\r" not in done.stderr.decode()  # not a terminal: plain progress lines
    assert await pg.fetchval("SELECT count(*) FROM registrations WHERE key_id = 'new'") == 12
    audit = [fields for _, fields in await stream_range(redis_client, AUDIT_STREAM)]
    assert [fields[b"action"] for fields in audit] == [b"keys.reseal.start", b"keys.reseal.done"]
    assert audit[0][b"actor"].startswith(b"cli:")
    assert orjson.loads(audit[1][b"changes"])["resealed"] == 12


async def test_a_failed_reseal_is_audited_with_its_reason_and_exits_1(
    redis_client: Redis, test_settings: Settings, tmp_path: Path,
) -> None:
    # No PostgreSQL where the configuration points: the run fails after its start entry.
    away = test_settings.postgres.model_copy(update={"dsn": postgres_dsn(free_port())})
    config = tmp_path / "rotated.toml"
    write_config(rotated(test_settings).model_copy(update={"postgres": away}), config, 0, 0)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gelombang", "keys", "reseal"],
        cwd=REPO_ROOT, env={**os.environ, "GELOMBANG_CONFIG": str(config)},
        capture_output=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines()[-1] == (
        "gelombang keys reseal: failed (ConnectionRefusedError) after re-sealing 0"
        " registrations; run it again to resume")
    audit = [fields for _, fields in await stream_range(redis_client, AUDIT_STREAM)]
    assert [fields[b"action"] for fields in audit] == [
        b"keys.reseal.start", b"keys.reseal.failed"]
    assert orjson.loads(audit[1][b"changes"]) == {
        "error": "ConnectionRefusedError", "key_id": "new", "resealed": 0, "batches": 0,
        "unreadable": 0, "left": {},
        "addresses": {"key_id": "a1", "resealed": 0, "batches": 0, "unreadable": 0, "left": {}}}
    assert audit[1][b"actor"] == audit[0][b"actor"] and audit[1][b"actor"].startswith(b"cli:")
