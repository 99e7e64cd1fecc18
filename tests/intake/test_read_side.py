"""The read side: GET /v1/registrations/{id} and GET /admin/v1/funnel from PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import time
import uuid
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from config.settings import RegistrationIdSettings, Settings
from gelombang.processes import free_port
from gelombang.services import PostgresServer
from loadtest.registrants import RegistrantFactory
from queueing.envelope import Envelope
from queueing.ids import RegistrationIds, uuid7, uuid7_bytes
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


async def test_an_issued_id_answers_queued_until_it_is_stored(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, test_settings: Settings,
    registrants: RegistrantFactory,
) -> None:
    async with door_under_test.public.post("/v1/registrations",
                                           json=registrants.make().body()) as reply:
        assert reply.status == 202
        location = reply.headers["Location"]
    [envelope] = seal_people(test_settings, [registrants.make()], start_ms=1_790_000_000_000)

    async with door_under_test.public.get(location) as reply:
        posted = reply.status, await reply.json()
    before = await get_status(door_under_test, rid(envelope))
    await store_batch(pg, 0, 0, [envelope])
    after = await get_status(door_under_test, rid(envelope))

    assert posted[0] == 200
    assert posted[1]["registration_id"] == location.rsplit("/", 1)[1]
    assert (posted[1]["state"], posted[1]["email_verification"],
            posted[1]["nik_verification"]) == ("queued", "pending", "pending")
    # Not stored: the time it was admitted, the id's own.
    admitted = uuid.UUID(posted[1]["registration_id"]).int >> 80
    assert abs(admitted / 1000 - time.time()) < 60
    assert RFC3339_UTC.fullmatch(posted[1]["updated_at"])
    assert before == (200, {"registration_id": rid(envelope), "state": "queued",
                            "email_verification": "pending", "nik_verification": "pending",
                            "updated_at": "2026-09-21T14:13:20Z"})
    assert (after[0], after[1]["state"]) == (200, "accepted")


def never_issued(settings: Settings) -> list[str]:
    """Ids this deployment did not issue: random, unchecked v7, a bad check, another key's."""
    [issued] = seal_people(settings, [RegistrantFactory().make()])
    forged = bytearray(issued.registration_id)
    forged[-1] ^= 1
    other_key = RegistrationIds(os.urandom(32)).issue()
    future = RegistrationIds(settings.keys.hash_key_bytes()).issue()[:12] + os.urandom(4)
    return [str(uuid.uuid4()), str(uuid7()), str(uuid.UUID(bytes=bytes(forged))),
            str(uuid.UUID(bytes=other_key)), str(uuid7(int(time.time() * 1000) + 86_400_000)),
            str(uuid.UUID(bytes=future))]


async def test_ids_never_issued_are_404(door_under_test: DoorUnderTest, pg: asyncpg.Connection,
                                        test_settings: Settings) -> None:
    for registration_id in never_issued(test_settings):
        status, body = await get_status(door_under_test, registration_id)
        assert (status, body["error"]["code"]) == (404, "not_found"), registration_id


async def test_ids_never_issued_are_answered_without_postgres(
    test_settings: Settings, redis_client: Redis, own_postgres: PostgresServer,
) -> None:
    settings = test_settings.model_copy(update={
        "postgres": test_settings.postgres.model_copy(update={"dsn": own_postgres.dsn})})
    forged = never_issued(settings) * 20
    async with running_door(settings) as door:
        os.kill(own_postgres.pid, signal.SIGSTOP)  # a connection attempt now hangs
        try:
            started = time.monotonic()
            answers = await asyncio.gather(*(get_status(door, text) for text in forged))
            elapsed = time.monotonic() - started
            # An issued id does need PostgreSQL: it waits out the door's timeout.
            issued = await get_status(door, str(uuid.UUID(bytes=door.door.ids.issue())))
        finally:
            os.kill(own_postgres.pid, signal.SIGCONT)

    assert {(status, body["error"]["code"]) for status, body in answers} == {(404, "not_found")}
    assert elapsed < settings.postgres.door_timeout_seconds / 2
    assert (issued[0], issued[1]["error"]["code"]) == (503, "status_unavailable")


async def test_unchecked_ids_are_looked_up_only_inside_the_legacy_window(
    test_settings: Settings, redis_client: Redis, pg: asyncpg.Connection,
    registrants: RegistrantFactory,
) -> None:
    [envelope] = seal_people(test_settings, [registrants.make()], start_ms=1_790_000_000_000)
    # Issued before the door had the check: a plain UUIDv7 of that time.
    legacy = dataclasses.replace(envelope, registration_id=uuid7_bytes(1_790_000_000_000))
    await store_batch(pg, 0, 0, [legacy])
    stored, queued = str(uuid.UUID(bytes=legacy.registration_id)), str(uuid7(1_790_000_000_001))
    window = test_settings.model_copy(update={"registration_ids": RegistrationIdSettings(
        legacy_from="2026-09-01T00:00:00Z", legacy_until="2026-10-01T00:00:00Z")})

    async with running_door(window) as door:
        inside = [await get_status(door, text) for text in (stored, queued)]
        outside = await get_status(door, str(uuid7(1_760_000_000_000)))
    async with running_door(test_settings) as door:
        without = await get_status(door, stored)

    assert [(status, body.get("state")) for status, body in inside] == [
        (200, "accepted"), (404, None)]
    assert outside[0] == without[0] == 404


async def test_postgres_down_is_503_fast_and_intake_goes_on(
    test_settings: Settings, redis_client: Redis, registrants: RegistrantFactory,
) -> None:
    dead = f"postgresql://gelombang@127.0.0.1:{free_port()}/gelombang"
    settings = test_settings.model_copy(update={
        "postgres": test_settings.postgres.model_copy(update={"dsn": dead})})
    async with running_door(settings) as door:
        issued = str(uuid.UUID(bytes=door.door.ids.issue()))
        started = time.monotonic()
        status, body = await get_status(door, issued)
        elapsed = time.monotonic() - started
        async with door.public.get(f"/v1/registrations/{issued}") as reply:
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
