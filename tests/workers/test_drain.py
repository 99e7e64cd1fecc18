"""The drain in one process: streams into PostgreSQL, dead letters, reclaiming."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import orjson
import pytest

from config.settings import Settings
from database.funnel import funnel_counts
from gelombang.devstate import render_toml
from loadtest.registrants import RegistrantFactory
from queueing.envelope import STREAM_FIELD
from queueing.keys import STORE_GROUP, Partition
from queueing.redis_client import RedisClient
from tests.intake.door_helpers import DoorUnderTest
from tests.support import REPO_ROOT, leaked, seal_people, stream_range
from tests.workers.drain_helpers import (
    backlog,
    drain_settings,
    enqueue,
    handed_off,
    running_drain,
    wait_drained,
)

# Each test runs on one Redis server and on a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.both_redis


async def stored(pg: asyncpg.Connection) -> dict[uuid.UUID, str]:
    rows = await pg.fetch("SELECT registration_id, state::text FROM registrations")
    return {row[0]: row[1] for row in rows}


async def test_posted_registrations_are_stored_and_handed_off_once(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    people = [registrants.make() for _ in range(30)]
    people.append(registrants.same_nik_as(people[0]))
    ids = []
    for person in people:
        async with door_under_test.public.post("/v1/registrations", json=person.body()) as reply:
            assert reply.status == 202
            ids.append(uuid.UUID((await reply.json())["registration_id"]))
    settings = drain_settings(test_settings)

    async with running_drain(settings):
        await wait_drained(redis_client, settings)

    states = await stored(pg)
    assert set(states) == set(ids)
    assert Counter(states.values()) == {"accepted": 30, "duplicate": 1}
    assert states[ids[-1]] == "duplicate"
    # The round trip: the door now answers each id's stored states.
    for registration_id, expected in ((ids[0], ("accepted", "pending", "pending")),
                                      (ids[-1], ("duplicate", "skipped", "skipped"))):
        async with door_under_test.public.get(f"/v1/registrations/{registration_id}") as reply:
            assert reply.status == 200
            body = await reply.json()
        assert (body["state"], body["email_verification"], body["nik_verification"]) == expected
    accepted = sorted(i for i, state in states.items() if state == "accepted")
    jobs = await handed_off(redis_client, settings)
    assert {kind: sorted(found) for kind, found in jobs.items()} == {
        "email": accepted, "nik": accepted}
    assert await pg.fetchval("SELECT count(*) FROM verification_handoffs") == 0
    assert await funnel_counts(pg) == {"stored": 31, "accepted": 30, "duplicate": 1}
    # PostgreSQL holds no plaintext personal data: not as text, not as bytea hex.
    dump = "\n".join(row[0] for row in await pg.fetch("SELECT r::text FROM registrations r"))
    assert leaked(dump.encode(), people) == 0
    assert leaked(dump.encode(), people, as_hex=True) == 0


async def test_a_poison_entry_is_dead_lettered_and_the_partition_flows(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    settings = drain_settings(test_settings, batch_size=5)
    envelopes = seal_people(settings, [registrants.make() for _ in range(20)])
    stream = Partition(0).stream
    await redis_client.xadd(stream, {STREAM_FIELD: b"\xc1 not msgpack"})
    await redis_client.xadd(stream, {b"other": b"no envelope"})
    await enqueue(redis_client, settings, envelopes)

    async with running_drain(settings):
        await wait_drained(redis_client, settings)

    assert len(await stored(pg)) == 20
    letters = await pg.fetch("SELECT stream, reason, payload FROM dead_letters ORDER BY entry_id")
    assert [(row[0], row[1].split(":")[0]) for row in letters] == [
        (stream, "undecodable"), (stream, "undecodable")]
    assert letters[0][2] == b"\xc1 not msgpack"
    assert len(await stream_range(redis_client, Partition(0).dead_letters)) == 2
    assert (await funnel_counts(pg))["dead_letter"] == 2


async def test_entries_of_a_dead_consumer_are_reclaimed(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    settings = drain_settings(test_settings)
    envelopes = seal_people(settings, [registrants.make() for _ in range(10)])
    await enqueue(redis_client, settings, envelopes)
    async with running_drain(settings):  # creates the groups, drains the first lot
        await wait_drained(redis_client, settings)
    more = seal_people(settings, [registrants.make() for _ in range(10)])
    await enqueue(redis_client, settings, more)
    # A consumer reads everything and dies without acknowledging.
    for partition in range(settings.queue.partitions):
        await redis_client.xreadgroup(STORE_GROUP, "ghost", {Partition(partition).stream: ">"})

    async with running_drain(settings, name="heir"):
        await wait_drained(redis_client, settings, within=15)

    assert len(await stored(pg)) == 20


async def test_an_entry_taken_over_many_times_is_stored_not_dead_lettered(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    # Restarts, rollouts and leases expiring during an outage each take the
    # entry over (a delivery each); none is a store attempt PostgreSQL refused.
    settings = drain_settings(test_settings, max_refusals=2)
    (envelope,) = seal_people(settings, [registrants.make()])
    async with running_drain(settings):
        pass  # only to create the consumer groups
    stream = Partition(0).stream
    entry_id = await redis_client.xadd(stream, {STREAM_FIELD: envelope.encode()})
    await redis_client.xreadgroup(STORE_GROUP, "restarted-0", {stream: ">"})
    for restart in range(1, 7):
        await redis_client.xclaim(stream, STORE_GROUP, f"restarted-{restart}", 0, [entry_id])

    async with running_drain(settings):
        await wait_drained(redis_client, settings, within=15)

    assert set(await stored(pg)) == {uuid.UUID(bytes=envelope.registration_id)}
    assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_stopping_finishes_the_batch_in_hand(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    settings = drain_settings(test_settings, batch_size=500)
    envelopes = seal_people(settings, [registrants.make() for _ in range(2000)])
    await enqueue(redis_client, settings, envelopes)

    async with running_drain(settings) as worker:
        for _ in range(2000):
            if worker.stats.batches:
                break
            await asyncio.sleep(0.005)
    # Stopped: whatever was read was stored and acknowledged, nothing is pending.
    length, _ = await backlog(redis_client, settings)
    assert length + len(await stored(pg)) == 2000
    pending = sum([int((await redis_client.xpending(Partition(p).stream, STORE_GROUP))["pending"])
                   for p in range(settings.queue.partitions)])
    assert pending == 0


@pytest.mark.parametrize("batch_size", [1, 7])
async def test_any_batch_size_stores_everything_once(
    pg: asyncpg.Connection, redis_client: RedisClient, test_settings: Settings,
    registrants: RegistrantFactory, batch_size: int,
) -> None:
    settings = drain_settings(test_settings, batch_size=batch_size)
    envelopes = seal_people(settings, [registrants.make() for _ in range(40)])
    await enqueue(redis_client, settings, envelopes)
    async with running_drain(settings):
        await wait_drained(redis_client, settings)
    assert set(await stored(pg)) == {uuid.UUID(bytes=e.registration_id) for e in envelopes}


async def test_admin_changes_are_archived_in_postgres_once(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings,
) -> None:
    headers = {"Authorization": f"Bearer {test_settings.admin.token}"}
    for rate in (100, 200):
        async with door_under_test.admin.put("/admin/v1/admission", json={"rate_per_second": rate},
                                             headers=headers) as reply:
            assert reply.status == 200
    settings = drain_settings(test_settings)

    for _ in range(2):  # a second worker finds nothing new to archive
        async with running_drain(settings):
            for _ in range(100):
                if await pg.fetchval("SELECT count(*) FROM audit_log") >= 2:
                    break
                await asyncio.sleep(0.05)

    rows = await pg.fetch("SELECT actor, action, changes FROM audit_log ORDER BY stream_id")
    assert [(row[0], row[1]) for row in rows] == [("admin-token", "admission.update")] * 2
    assert [row[2] for row in rows] == ['{"rate_per_second": 100.0}',
                                       '{"rate_per_second": 200.0}']


async def test_worker_status_shows_partitions_dead_letters_and_live_workers(
    redis_client: RedisClient, pg: asyncpg.Connection, test_settings: Settings, tmp_path: Path,
) -> None:
    settings = drain_settings(test_settings)
    await redis_client.xadd(Partition(1).stream, {STREAM_FIELD: b"junk"})
    config = tmp_path / "status.toml"
    config.write_text(render_toml(settings.model_dump(mode="json")))
    env = {**os.environ, "GELOMBANG_CONFIG": str(config)}

    async with running_drain(settings, name="status-test"):
        await wait_drained(redis_client, settings)
        await asyncio.sleep(0.6)  # one heartbeat
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "gelombang", "worker", "status", "--json"],
            cwd=REPO_ROOT, env=env, capture_output=True, check=True)
        text = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "gelombang", "worker", "status"],
            cwd=REPO_ROOT, env=env, capture_output=True, check=True)

    status = orjson.loads(result.stdout)
    rows = {row["partition"]: row for row in status["partitions"]}
    assert set(rows) == set(range(settings.queue.partitions))
    assert rows[1]["dead_letters"] == 1 and rows[1]["length"] == 0 and rows[1]["pending"] == 0
    assert rows[1]["lag"] == 0
    # The one worker stores every partition (it holds their leases).
    assert {row["lease"] for row in rows.values()} == {"status-test"}
    (worker,) = status["workers"]
    assert worker["name"] == "status-test" and worker["alive"]
    assert b"status-test: alive" in text.stdout
