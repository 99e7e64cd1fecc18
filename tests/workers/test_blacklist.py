"""Blacklist import: hashes only, atomic replace per source, bad lines by number."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from gelombang.devstate import render_toml
from gelombang.processes import free_port
from gelombang.services import postgres_dsn
from loadtest.registrants import RegistrantFactory
from queueing.keys import AUDIT_STREAM
from queueing.sealing import KeyedHasher
from tests.support import REPO_ROOT, seal_people, stream_range
from tests.workers.drain_helpers import drain_settings, enqueue, running_drain, wait_drained
from workers.blacklist import REPORTED_BAD_LINES, import_source


def hasher(settings: Settings) -> KeyedHasher:
    return KeyedHasher(settings.keys.hash_key_bytes())


async def listed(pg: asyncpg.Connection, source: str) -> set[bytes]:
    rows = await pg.fetch("SELECT nik_hash FROM nik_blacklist WHERE source = $1", source)
    return {row[0] for row in rows}


async def test_a_header_a_nik_column_and_bad_lines(
    pg: asyncpg.Connection, test_settings: Settings, tmp_path: Path,
) -> None:
    niks = ["3201014506990001", "3171010101900002"]
    path = tmp_path / "taspen.csv"
    path.write_text(f"name,nik\nA,{niks[0]}\n\nB,not-a-nik\nC,{niks[1]}\nD,{niks[1]}\nE\n")

    report = await import_source(pg, path, "taspen", hasher(test_settings))

    assert report.imported == 2
    assert report.bad_lines == [4, 7] and report.bad_count == 2
    assert await listed(pg, "taspen") == {hasher(test_settings).digest(n) for n in niks}
    rows = await pg.fetch("SELECT * FROM nik_blacklist")
    assert all(len(row["nik_hash"]) == 32 for row in rows)
    assert not any(n.encode() in repr(list(rows)).encode() for n in niks)


async def test_reimport_replaces_only_its_own_source(
    pg: asyncpg.Connection, test_settings: Settings, tmp_path: Path,
) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("3201014506990001\n3201014506990002\n")
    second.write_text("3201014506990003\n")
    keyed = hasher(test_settings)
    await import_source(pg, first, "asabri", keyed)
    await import_source(pg, second, "bumn", keyed)

    again = await import_source(pg, second, "asabri", keyed)

    assert (again.imported, again.replaced) == (1, 2)
    assert await listed(pg, "asabri") == {keyed.digest("3201014506990003")}
    assert await listed(pg, "bumn") == {keyed.digest("3201014506990003")}


async def test_a_failed_import_leaves_the_old_list(
    pg: asyncpg.Connection, test_settings: Settings, tmp_path: Path,
) -> None:
    path = tmp_path / "list.csv"
    path.write_text("3201014506990001\n")
    keyed = hasher(test_settings)
    await import_source(pg, path, "taspen", keyed)
    broken = tmp_path / "missing.csv"

    with pytest.raises(FileNotFoundError):
        await import_source(pg, broken, "taspen", keyed)

    assert await listed(pg, "taspen") == {keyed.digest("3201014506990001")}


async def test_the_command_reports_bad_lines_by_number_never_by_content(
    pg: asyncpg.Connection, redis_client: Redis, test_settings: Settings, tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(render_toml(test_settings.model_dump(mode="json")))
    path = tmp_path / "list.csv"
    secret_looking = "32010145069900019"  # 17 digits: not a NIK, and never echoed
    lines = ["3201014506990001"] + [secret_looking] * (REPORTED_BAD_LINES + 5)
    path.write_text("\n".join(lines) + "\n")

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gelombang", "blacklist", "import", str(path), "--source", "x"],
        cwd=REPO_ROOT, env={**os.environ, "GELOMBANG_CONFIG": str(config)},
        capture_output=True, text=True, check=True)

    assert "source x: 1 NIKs listed (replacing 0)" in result.stdout
    assert f"{REPORTED_BAD_LINES + 5} lines without a well-formed NIK" in result.stderr
    assert "lines 2, 3," in result.stderr and "…" in result.stderr
    assert secret_looking not in result.stdout + result.stderr
    # Audited as an admin action: who, from where, what; counts, never a NIK.
    audit = [fields for _, fields in await stream_range(redis_client, AUDIT_STREAM)]
    assert [fields[b"action"] for fields in audit] == [
        b"blacklist.import.start", b"blacklist.import.done"]
    assert orjson.loads(audit[1][b"changes"]) == {
        "source": "x", "listed": 1, "replaced": 0, "bad_lines": REPORTED_BAD_LINES + 5}
    assert audit[0][b"actor"].startswith(b"cli:") and audit[0][b"source"]


async def test_a_failed_import_is_audited_with_its_reason_and_exits_1(
    redis_client: Redis, test_settings: Settings, tmp_path: Path,
) -> None:
    # No PostgreSQL where the configuration points: the run fails after its start entry.
    away = test_settings.postgres.model_copy(update={"dsn": postgres_dsn(free_port())})
    config = tmp_path / "config.toml"
    config.write_text(render_toml(
        test_settings.model_copy(update={"postgres": away}).model_dump(mode="json")))
    path = tmp_path / "list.csv"
    path.write_text("3201014506990001\n")

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gelombang", "blacklist", "import", str(path), "--source", "x"],
        cwd=REPO_ROOT, env={**os.environ, "GELOMBANG_CONFIG": str(config)},
        capture_output=True, text=True, check=False)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "gelombang blacklist: import failed (ConnectionRefusedError); the list of source x"
        " is unchanged")
    audit = [fields for _, fields in await stream_range(redis_client, AUDIT_STREAM)]
    assert [fields[b"action"] for fields in audit] == [
        b"blacklist.import.start", b"blacklist.import.failed"]
    assert orjson.loads(audit[1][b"changes"]) == {"error": "ConnectionRefusedError",
                                                  "source": "x"}


@pytest.mark.slow
async def test_a_million_niks_import_and_make_matching_registrations_ineligible(
    pg: asyncpg.Connection, redis_client: Redis, test_settings: Settings,
    registrants: RegistrantFactory, tmp_path: Path,
) -> None:
    people = [registrants.make() for _ in range(20)]
    banned = people[:5]
    rng = random.Random(7)
    path = tmp_path / "million.csv"
    with path.open("w") as out:
        out.write("nik\n")
        for index in range(1_000_000):
            if index % 200_000 == 0 and banned:
                out.write(banned.pop().nik + "\n")
            out.write(f"{rng.randrange(10**15, 10**16)}\n")

    report = await import_source(pg, path, "taspen", hasher(test_settings))

    assert report.imported >= 1_000_000 and report.bad_count == 0
    settings = drain_settings(test_settings)
    envelopes = seal_people(settings, people)
    await enqueue(redis_client, settings, envelopes)
    async with running_drain(settings):
        await wait_drained(redis_client, settings)
    states = [row[0] for row in await pg.fetch(
        "SELECT state::text FROM registrations ORDER BY registration_id")]
    assert states == ["ineligible"] * 5 + ["accepted"] * 15
