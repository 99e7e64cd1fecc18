"""`gelombang dead-letters list|replay|drop`, run as an operator runs it (a process
with a config file) against the suite's Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from config.settings import Settings
from gelombang.devstate import render_toml
from gelombang.processes import free_port
from loadtest.registrants import RegistrantFactory
from queueing.envelope import STREAM_FIELD, Envelope
from queueing.keys import AUDIT_STREAM, Partition
from queueing.redis_client import RedisClient
from tests.support import REPO_ROOT, leaked, seal_people, stream_range
from tests.workers.drain_helpers import drain_settings, running_drain, wait_drained
from workers.dead_letters import Outcome, Replayer, Selection, list_letters
from workers.drain.handoff import JOB_FIELD
from workers.drain.store import QUERIES as STORE_QUERIES

ROW_KEYS = {"partition", "id", "kind", "reason", "deliveries", "age_seconds", "entry", "stream",
            "registration"}


async def cli(settings: Settings, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`gelombang dead-letters ARGS` in its own process, configured like production."""
    config = folder / "gelombang.toml"
    config.write_text(render_toml(settings.model_dump(mode="json")))
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gelombang", "dead-letters", *args],
        cwd=REPO_ROOT, env={**os.environ, "GELOMBANG_CONFIG": str(config)},
        capture_output=True, text=True, timeout=60, check=False)


async def dead_intake(redis: RedisClient, pg: asyncpg.Connection, partition: Partition,
                      payload: bytes, entry_id: str = "1700000000000-0",
                      reason: str = "refused by PostgreSQL: SQLSTATE 23514",
                      deliveries: int = 1) -> str:
    """An intake dead letter written as the drain writes one: the record, then the stream."""
    await pg.fetchval(STORE_QUERIES["insert_dead_letter"], partition.stream, entry_id, reason,
                      deliveries, payload)
    dead_id: Any = await redis.xadd(partition.dead_letters, {
        "entry": entry_id, "reason": reason, "deliveries": deliveries, "m": payload})
    return str(dead_id.decode())


async def dead_job(redis: RedisClient, partition: Partition, kind: str, registration: bytes,
                   reason: str = "registration not stored") -> str:
    """A verification job given up on, in the format the job workers write."""
    dead_id: Any = await redis.xadd(partition.dead_letters, {
        "entry": "1700000000001-0", "stream": partition.verification(kind), "reason": reason,
        "r": registration})
    return str(dead_id.decode())


async def audit_trail(redis: RedisClient) -> list[tuple[bytes, dict[str, Any]]]:
    """(action, changes) of every audit entry."""
    return [(fields[b"action"], orjson.loads(fields[b"changes"]))
            for _, fields in await stream_range(redis, AUDIT_STREAM)]


async def records(pg: asyncpg.Connection) -> list[tuple[str, str]]:
    """(stream, entry id) of every dead_letters row."""
    return [(row[0], row[1]) for row in
            await pg.fetch("SELECT stream, entry_id FROM dead_letters ORDER BY entry_id")]


async def test_list_shows_every_kind_and_no_payload(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory, tmp_path: Path,
) -> None:
    people = [registrants.make()]
    (envelope,) = seal_people(test_settings, people)
    payload = envelope.encode()
    registration = uuid.uuid4()
    intake_id = await dead_intake(redis_client, pg, Partition(0), payload, deliveries=3,
                                  reason="delivered 3 times without being stored")
    email_id = await dead_job(redis_client, Partition(1), "email", registration.bytes,
                              reason="email not sent after 5 tries: 451")
    nik_id = await dead_job(redis_client, Partition(2), "nik", registration.bytes)

    listed = await cli(test_settings, tmp_path, "list", "--json")
    table = await cli(test_settings, tmp_path, "list")
    only_nik = await cli(test_settings, tmp_path, "list", "--json", "--kind", "nik")
    only_p1 = await cli(test_settings, tmp_path, "list", "--json", "--partition", "1")

    assert listed.returncode == table.returncode == 0, listed.stderr + table.stderr
    rows = orjson.loads(listed.stdout)
    assert [(r["partition"], r["id"], r["kind"], r["deliveries"], r["registration"])
            for r in rows] == [(0, intake_id, "intake", 3, None),
                               (1, email_id, "email", None, str(registration)),
                               (2, nik_id, "nik", None, str(registration))]
    assert all(set(row) == ROW_KEYS and 0 <= row["age_seconds"] < 60 for row in rows)
    assert rows[0]["reason"] == "delivered 3 times without being stored"
    assert rows[0]["stream"] == Partition(0).stream
    assert rows[1]["stream"] == Partition(1).verification("email")
    lines = table.stdout.splitlines()
    assert len(lines) == 4 and lines[0].split()[:4] == ["partition", "id", "kind", "deliveries"]
    assert lines[1].split()[:4] == ["0", intake_id, "intake", "3"]
    assert lines[2].split()[:4] == ["1", email_id, "email", "-"]
    assert [r["id"] for r in orjson.loads(only_nik.stdout)] == [nik_id]
    assert [r["id"] for r in orjson.loads(only_p1.stdout)] == [email_id]
    # The sealed payload never shows, in no encoding, and neither does what it seals.
    for result in (listed, table):
        output = (result.stdout + result.stderr).encode()
        for encoded in (payload[-24:], payload[-24:].hex().encode(),
                        base64.b64encode(payload)[-32:], repr(payload)[-40:-1].encode()):
            assert encoded not in output
        assert leaked(output, people) == 0
    # Listing changes nothing and is not audited.
    assert len(await stream_range(redis_client, Partition(0).dead_letters)) == 1
    assert await audit_trail(redis_client) == []


async def test_list_cut_short_by_limit_says_so(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings, tmp_path: Path,
) -> None:
    ids = [await dead_job(redis_client, Partition(0), "email", uuid.uuid4().bytes)
           for _ in range(3)]

    result = await cli(test_settings, tmp_path, "list", "--json", "--limit", "2")

    assert [row["id"] for row in orjson.loads(result.stdout)] == ids[:2]
    assert "only the first 2 shown" in result.stderr


async def make_intake_dead_letter_by_the_drain(
    pg: asyncpg.Connection, redis: RedisClient, settings: Settings, envelope: Envelope,
) -> Partition:
    """The real drain dead-letters a valid envelope PostgreSQL refused `max_refusals` times
    (a constraint refuses its NIK hash); then what refused it is fixed (dropped)."""
    partition = Partition(0)
    await redis.xadd(partition.stream, {STREAM_FIELD: envelope.encode()})
    await pg.execute("ALTER TABLE registrations ADD CONSTRAINT test_refuses_one"
                     f" CHECK (nik_hash <> '\\x{envelope.nik_hash.hex()}'::bytea) NOT VALID")
    try:
        async with running_drain(settings):
            await wait_drained(redis, settings, within=15)
    finally:
        await pg.execute("ALTER TABLE registrations DROP CONSTRAINT IF EXISTS test_refuses_one")
    return partition


async def test_replay_of_an_intake_dead_letter_gets_it_stored(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory, tmp_path: Path,
) -> None:
    settings = drain_settings(test_settings, max_refusals=2)
    (envelope,) = seal_people(settings, [registrants.make()])
    partition = await make_intake_dead_letter_by_the_drain(pg, redis_client, settings, envelope)
    assert await pg.fetchval("SELECT count(*) FROM registrations") == 0
    assert len(await records(pg)) == 1
    [(dead_id, _)] = await stream_range(redis_client, partition.dead_letters)

    result = await cli(settings, tmp_path, "replay")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("replayed 1 dead letters (intake 1);"
                                     " 1 PostgreSQL records removed")
    assert "\r" not in result.stderr and "replaying: 1/1" in result.stderr
    assert await stream_range(redis_client, partition.dead_letters) == []
    assert await records(pg) == []
    # Audited: the selection first, then what happened (read before a drain
    # runs: its archiver moves the trail to PostgreSQL).
    trail = await audit_trail(redis_client)
    assert [action for action, _ in trail] == [b"dead_letters.replay.start",
                                              b"dead_letters.replay.done"]
    assert trail[0][1] == {"kinds": "all", "partitions": "all", "ids": [], "limit": None}
    assert trail[1][1]["outcome"] == "ok"
    assert (trail[1][1]["selected"], trail[1][1]["done"], trail[1][1]["rows_deleted"]) == (1, 1, 1)
    [(_, fields)] = await stream_range(redis_client, partition.stream)
    assert fields == {STREAM_FIELD: envelope.encode()}
    async with running_drain(settings):
        await wait_drained(redis_client, settings, within=15)
    stored = await pg.fetchval("SELECT registration_id FROM registrations")
    assert stored == uuid.UUID(bytes=envelope.registration_id)
    assert await stream_range(redis_client, partition.dead_letters) == []
    # Replayed once: the id is gone, a second replay of it is refused and adds nothing.
    again = await cli(settings, tmp_path, "replay", "--id", dead_id.decode())
    assert again.returncode == 1 and "no such dead letter" in again.stderr
    assert await pg.fetchval("SELECT count(*) FROM registrations") == 1


@pytest.mark.both_redis
async def test_replay_of_jobs_puts_their_registration_ids_back(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory, tmp_path: Path,
) -> None:
    (envelope,) = seal_people(test_settings, [registrants.make()])
    intake_id = await dead_intake(redis_client, pg, Partition(3), envelope.encode())
    email, nik = uuid.uuid4(), uuid.uuid4()
    await dead_job(redis_client, Partition(1), "email", email.bytes)
    await dead_job(redis_client, Partition(2), "nik", nik.bytes)
    malformed = await dead_job(redis_client, Partition(2), "nik", b"", reason="malformed job")

    result = await cli(test_settings, tmp_path, "replay", "--kind", "email", "--kind", "nik")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "replayed 2 dead letters (email 1, nik 1); 1 skipped: nothing to replay (drop them"
        " instead); 0 PostgreSQL records removed")
    assert [f for _, f in await stream_range(redis_client, Partition(1).verification("email"))
            ] == [{JOB_FIELD: email.bytes}]
    assert [f for _, f in await stream_range(redis_client, Partition(2).verification("nik"))
            ] == [{JOB_FIELD: nik.bytes}]
    # Left dead-lettered: the malformed job, and the intake letter (another kind).
    assert [i.decode() for i, _ in await stream_range(redis_client, Partition(2).dead_letters)
            ] == [malformed]
    assert [i.decode() for i, _ in await stream_range(redis_client, Partition(3).dead_letters)
            ] == [intake_id]
    assert len(await records(pg)) == 1
    assert await stream_range(redis_client, Partition(3).stream) == []
    trail = await audit_trail(redis_client)
    assert trail[0][1]["kinds"] == ["email", "nik"]
    assert {k: trail[1][1][k] for k in ("selected", "done", "skipped", "outcome")} == {
        "selected": 3, "done": 2, "skipped": 1, "outcome": "ok"}


async def test_each_letter_is_replayed_once(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
) -> None:
    for n in range(3):
        await dead_intake(redis_client, pg, Partition(0), b"sealed %d" % n, f"17-{n}")
    selection = Selection(test_settings.queue.partitions)
    letters = await list_letters(redis_client, selection)
    first, second = Outcome(), Outcome()

    # Two operators replay the same letters: the second finds them gone.
    await Replayer(redis_client, pg).replay(letters, first)
    await Replayer(redis_client, pg).replay(letters, second)

    assert (first.done, first.gone, first.rows_deleted) == (3, 0, 3)
    assert (second.done, second.gone, second.rows_deleted) == (0, 3, 0)
    replayed = [f[STREAM_FIELD] for _, f in await stream_range(redis_client, Partition(0).stream)]
    assert replayed == [b"sealed 0", b"sealed 1", b"sealed 2"]


@pytest.mark.both_redis
async def test_drop_removes_the_entry_and_its_record(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings, tmp_path: Path,
) -> None:
    dropped = await dead_intake(redis_client, pg, Partition(0), b"sealed a", "17-0")
    kept = await dead_intake(redis_client, pg, Partition(0), b"sealed b", "17-1")
    await dead_job(redis_client, Partition(1), "email", uuid.uuid4().bytes)

    one = await cli(test_settings, tmp_path, "drop", "--id", dropped, "--partition", "0",
                    "--yes")
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == "dropped 1 dead letters (intake 1); 1 PostgreSQL records removed"
    assert [i.decode() for i, _ in await stream_range(redis_client, Partition(0).dead_letters)
            ] == [kept]
    assert await records(pg) == [(Partition(0).stream, "17-1")]

    rest = await cli(test_settings, tmp_path, "drop", "--yes")
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout.startswith("dropped 2 dead letters (email 1, intake 1);")
    assert await stream_range(redis_client, Partition(0).dead_letters) == []
    assert await stream_range(redis_client, Partition(1).dead_letters) == []
    assert await records(pg) == []
    # Nothing was replayed anywhere.
    assert await stream_range(redis_client, Partition(0).stream) == []
    assert await stream_range(redis_client, Partition(1).verification("email")) == []
    trail = await audit_trail(redis_client)
    assert [action for action, _ in trail] == [b"dead_letters.drop.start",
                                              b"dead_letters.drop.done"] * 2
    assert (trail[0][1]["ids"], trail[0][1]["partitions"]) == ([dropped], [0])
    assert (trail[1][1]["done"], trail[3][1]["done"]) == (1, 2)


async def test_an_id_on_two_partitions_needs_a_partition(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings, tmp_path: Path,
) -> None:
    # Dead streams are separate: two partitions' letters often share an id (one millisecond).
    for index in (0, 1):
        await redis_client.xadd(Partition(index).dead_letters, {
            "entry": "1-0", "stream": Partition(index).verification("email"), "reason": "r",
            "r": uuid.uuid4().bytes}, id="1700000000000-0")

    ambiguous = await cli(test_settings, tmp_path, "replay", "--id", "1700000000000-0")
    chosen = await cli(test_settings, tmp_path, "replay", "--id", "1700000000000-0",
                       "--partition", "1")

    assert ambiguous.returncode == 1
    assert ambiguous.stderr.strip() == (
        "gelombang dead-letters: 1700000000000-0 is on the dead streams of partitions 0, 1:"
        " name one with --partition")
    assert chosen.returncode == 0, chosen.stderr
    assert len(await stream_range(redis_client, Partition(0).dead_letters)) == 1
    assert await stream_range(redis_client, Partition(1).dead_letters) == []
    assert await stream_range(redis_client, Partition(0).verification("email")) == []
    assert len(await stream_range(redis_client, Partition(1).verification("email"))) == 1
    # The refused run changed nothing, so it left no audit entry; the other left two.
    assert len(await audit_trail(redis_client)) == 2


async def test_drop_without_yes_changes_nothing(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings, tmp_path: Path,
) -> None:
    await dead_intake(redis_client, pg, Partition(0), b"sealed", "17-0")
    await dead_job(redis_client, Partition(1), "nik", uuid.uuid4().bytes)

    result = await cli(test_settings, tmp_path, "drop")

    assert result.returncode == 1
    assert "would drop 2 dead letters (intake 1, nik 1); nothing dropped" in result.stderr
    assert len(await stream_range(redis_client, Partition(0).dead_letters)) == 1
    assert len(await stream_range(redis_client, Partition(1).dead_letters)) == 1
    assert len(await records(pg)) == 1
    assert await audit_trail(redis_client) == []


async def test_a_replay_failing_part_way_says_how_far_it_got_and_is_audited(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings, tmp_path: Path,
) -> None:
    await dead_intake(redis_client, pg, Partition(0), b"sealed", "17-0")
    # PostgreSQL refuses the record's delete after Redis has replayed the letter.
    await pg.execute("ALTER TABLE dead_letters RENAME TO dead_letters_away")
    try:
        result = await cli(test_settings, tmp_path, "replay")
    finally:
        await pg.execute("ALTER TABLE dead_letters_away RENAME TO dead_letters")

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("gelombang dead-letters: PostgreSQL failed (UndefinedTableError")
    assert "before that: replayed 1 dead letters (intake 1)" in line
    assert "Traceback" not in result.stderr
    # The letter went back once; only its record stayed behind.
    assert len(await stream_range(redis_client, Partition(0).stream)) == 1
    assert await stream_range(redis_client, Partition(0).dead_letters) == []
    trail = await audit_trail(redis_client)
    assert [action for action, _ in trail] == [b"dead_letters.replay.start",
                                              b"dead_letters.replay.done"]
    assert trail[1][1]["outcome"].startswith("failed: PostgreSQL failed (UndefinedTableError")
    assert trail[1][1]["done"] == 1


@pytest.mark.parametrize("service", ["redis", "postgres"])
async def test_an_unreachable_service_is_one_line_and_exit_1(
    test_settings: Settings, tmp_path: Path, service: str,
) -> None:
    port = free_port()  # nothing listens there
    if service == "redis":
        broken = test_settings.model_copy(update={"redis": test_settings.redis.model_copy(
            update={"url": f"redis://127.0.0.1:{port}/0", "cluster": False})})
    else:
        broken = test_settings.model_copy(update={"postgres": test_settings.postgres.model_copy(
            update={"dsn": f"postgresql://gelombang@127.0.0.1:{port}/gelombang"})})

    # `list` needs Redis only; `replay` connects to PostgreSQL first.
    result = await cli(broken, tmp_path, "list" if service == "redis" else "replay")

    assert result.returncode == 1
    assert result.stdout == ""
    name = "Redis" if service == "redis" else "PostgreSQL"
    assert result.stderr.startswith(f"gelombang dead-letters: {name} failed (")
    assert len(result.stderr.strip().splitlines()) == 1
