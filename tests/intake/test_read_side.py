"""The read side: GET /v1/registrations/{id} and GET /admin/v1/funnel from PostgreSQL."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from gelombang.processes import free_port
from loadtest.registrants import RegistrantFactory
from queueing.envelope import Envelope
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.door_helpers import DoorUnderTest, running_door
from tests.support import leaked, seal_people
from workers.drain.store import store_batch

AUTH = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


async def get_status(door: DoorUnderTest, registration_id: str) -> tuple[int, Any]:
    async with door.public.get(f"/v1/registrations/{registration_id}") as reply:
        return reply.status, await reply.json()


def rid(envelope: Envelope) -> str:
    return str(uuid.UUID(bytes=envelope.registration_id))


async def test_stored_registrations_answer_their_states_and_nothing_personal(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    first, banned = registrants.make(), registrants.make()
    people = [first, registrants.same_nik_as(first), banned]
    envelopes = seal_people(test_settings, people)
    await pg.execute("INSERT INTO nik_blacklist (nik_hash, reason) VALUES ($1, 'test')",
                     envelopes[2].nik_hash)
    await store_batch(pg, 0, 0, envelopes)

    answers = [await get_status(door_under_test, rid(e)) for e in envelopes]

    assert [status for status, _ in answers] == [200, 200, 200]
    assert [(b["state"], b["email_verification"], b["nik_verification"]) for _, b in answers] == [
        ("accepted", "pending", "pending"),
        ("duplicate", "skipped", "skipped"),
        ("ineligible", "skipped", "skipped"),
    ]
    for envelope, (_, body) in zip(envelopes, answers, strict=True):
        assert set(body) == {"registration_id", "state", "email_verification",
                             "nik_verification", "updated_at"}
        assert body["registration_id"] == rid(envelope)
        assert RFC3339_UTC.fullmatch(body["updated_at"])
    assert leaked(repr(answers).encode(), people) == 0


@pytest.mark.parametrize("text", [
    "not-a-uuid", "0190b6a2c1d27e5f8a3b4c5d6e7f8091",
    "{0190b6a2-c1d2-7e5f-8a3b-4c5d6e7f8091}", "urn:uuid:0190b6a2-c1d2-7e5f-8a3b-4c5d6e7f8091",
    "0190b6a2-c1d2-7e5f-8a3b-4c5d6e7f809", "3201014506990001",
])
async def test_a_string_that_is_not_a_uuid_is_404(door_under_test: DoorUnderTest,
                                                   text: str) -> None:
    status, body = await get_status(door_under_test, text)
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_unknown_and_queued_registrations_are_404(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, registrants: RegistrantFactory,
) -> None:
    async with door_under_test.public.post("/v1/registrations",
                                           json=registrants.make().body()) as reply:
        assert reply.status == 202
        queued = (await reply.json())["registration_id"]

    for registration_id in (queued, str(uuid.uuid4())):
        status, body = await get_status(door_under_test, registration_id)
        assert (status, body["error"]["code"]) == (404, "not_found")


async def test_postgres_down_is_503_fast_and_intake_goes_on(
    test_settings: Settings, redis_client: Redis, registrants: RegistrantFactory,
) -> None:
    dead = f"postgresql://gelombang@127.0.0.1:{free_port()}/gelombang"
    settings = test_settings.model_copy(update={
        "postgres": test_settings.postgres.model_copy(update={"dsn": dead})})
    async with running_door(settings) as door:
        started = time.monotonic()
        status, body = await get_status(door, str(uuid.uuid4()))
        elapsed = time.monotonic() - started
        async with door.public.get(f"/v1/registrations/{uuid.uuid4()}") as reply:
            retry_after = reply.headers.get("Retry-After")
        async with door.admin.get("/admin/v1/funnel", headers=AUTH) as reply:
            funnel_status = reply.status
        async with door.public.post("/v1/registrations",
                                    json=registrants.make().body()) as reply:
            posted = reply.status

    assert (status, body["error"]["code"]) == (503, "status_unavailable")
    assert elapsed < 2.0
    assert retry_after is not None and int(retry_after) >= 1
    assert funnel_status == 503
    assert posted == 202


async def test_funnel_agrees_with_the_table_and_the_streams(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: Redis,
    test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    first = registrants.make()
    people = [first, registrants.same_nik_as(first)] + [registrants.make() for _ in range(4)]
    envelopes = seal_people(test_settings, people)
    await pg.execute("INSERT INTO nik_blacklist (nik_hash, reason) VALUES ($1, 'test')",
                     envelopes[-1].nik_hash)
    await store_batch(pg, 0, 0, envelopes[:3])
    await store_batch(pg, 1, 5, envelopes[3:])
    for _ in range(3):  # queued, not yet stored
        async with door_under_test.public.post("/v1/registrations",
                                               json=registrants.make().body()) as reply:
            assert reply.status == 202

    async with door_under_test.admin.get("/admin/v1/funnel", headers=AUTH) as reply:
        assert reply.status == 200
        funnel = await reply.json()
    async with door_under_test.admin.get("/admin/v1/funnel") as reply:
        assert reply.status == 401

    table = {row[0]: row[1] for row in await pg.fetch(
        "SELECT state::text, count(*) FROM registrations GROUP BY 1")}
    assert funnel["stored"] == sum(table.values()) == 6
    assert (funnel["accepted"], funnel["duplicate"], funnel["ineligible"]) == (
        table["accepted"], table["duplicate"], table["ineligible"]) == (4, 1, 1)
    assert funnel["stored"] == funnel["accepted"] + funnel["duplicate"] + funnel["ineligible"]
    streams = {p.stream: await redis_client.xlen(p.stream) for p in door_under_test.door.partitions}
    assert funnel["backlog"] == streams
    assert funnel["queued"] == sum(streams.values()) == 3
    for name in ("email_sent", "email_verified", "nik_verified", "nik_rejected", "dead_letter"):
        assert funnel[name] == 0
