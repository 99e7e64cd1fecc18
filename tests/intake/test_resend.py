"""The door's half of the verification priority lane: the resend, and status polls."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from config.settings import Settings
from gelombang.processes import free_port
from intake.storage import StorageUnavailable
from loadtest.registrants import Registrant, RegistrantFactory
from queueing.keys import JOB_FIELD, Partition, partition_for_registration, partitions
from queueing.redis_client import RedisClient
from tests.intake.door_helpers import DoorUnderTest, running_door
from tests.support import leaked, seal_people, stream_range
from workers.drain.handoff import KINDS
from workers.drain.store import store_batch

RESEND = "/v1/registrations/{}/verification-email"


async def stored(pg: asyncpg.Connection, settings: Settings,
                 people: list[Registrant]) -> list[uuid.UUID]:
    """Store the people as the drain does; their ids in order."""
    envelopes = seal_people(settings, people)
    await store_batch(pg, 0, 0, envelopes)
    return [uuid.UUID(bytes=e.registration_id) for e in envelopes]


async def set_states(pg: asyncpg.Connection, registration_id: uuid.UUID, email: str,
                     nik: str = "pending") -> None:
    await pg.execute("UPDATE registrations SET email_verification = $2, nik_verification = $3"
                     " WHERE registration_id = $1", registration_id, email, nik)


async def lane_jobs(redis: RedisClient, settings: Settings) -> dict[tuple[str, int], list[bytes]]:
    """Every priority job, by kind and partition (repeats kept, to be counted)."""
    jobs: dict[tuple[str, int], list[bytes]] = {}
    for partition in partitions(settings.queue.partitions):
        for kind in KINDS:
            entries = await stream_range(redis, partition.verification_priority(kind))
            if entries:
                jobs[kind, partition.index] = [fields[JOB_FIELD] for _, fields in entries]
    return jobs


def lane_of(settings: Settings, registration_id: uuid.UUID) -> int:
    return partition_for_registration(registration_id.bytes, settings.queue.partitions)


async def resend(door: DoorUnderTest, registration_id: uuid.UUID | str) -> tuple[int, Any, Any]:
    async with door.public.post(RESEND.format(registration_id)) as reply:
        return reply.status, await reply.json(), reply.headers


async def poll(door: DoorUnderTest, registration_id: uuid.UUID) -> tuple[int, Any]:
    async with door.public.get(f"/v1/registrations/{registration_id}") as reply:
        return reply.status, await reply.json()


async def email_state(pg: asyncpg.Connection, registration_id: uuid.UUID) -> str:
    state: str = await pg.fetchval("SELECT email_verification::text FROM registrations"
                                   " WHERE registration_id = $1", registration_id)
    return state


@pytest.mark.both_redis
async def test_a_resend_of_a_sent_email_makes_it_pending_and_adds_one_priority_job(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    person = registrants.make()
    [rid] = await stored(pg, test_settings, [person])
    await set_states(pg, rid, "sent")
    await pg.execute("INSERT INTO funnel_counts (name, shard, value) VALUES ('email_sent', 3, 1)")

    status, body, headers = await resend(door_under_test, rid)

    assert (status, body) == (202, {"email_verification": "pending", "resend_after_seconds": 60})
    assert await email_state(pg, rid) == "pending"
    # The email sent before is asked for again: the counter gives it back until it goes out.
    assert await pg.fetchval("SELECT sum(value) FROM funnel_counts WHERE name = 'email_sent'") == 0
    assert await lane_jobs(redis_client, test_settings) == {
        ("email", lane_of(test_settings, rid)): [rid.bytes]}
    hold = Partition(lane_of(test_settings, rid)).priority_hold("email", rid.bytes)
    assert 55_000 < await redis_client.pttl(hold) <= 60_000
    assert leaked(repr((body, dict(headers))).encode(), [person]) == 0


async def test_a_second_resend_within_the_interval_is_429_and_adds_nothing(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    [rid] = await stored(pg, test_settings, [registrants.make()])
    await set_states(pg, rid, "sent")
    assert (await resend(door_under_test, rid))[0] == 202
    await set_states(pg, rid, "sent")  # the worker sent it again meanwhile

    status, body, headers = await resend(door_under_test, rid)

    assert (status, body["error"]["code"]) == (429, "resend_too_soon")
    retry_after = int(headers["Retry-After"])
    assert 55 <= retry_after <= 60
    assert headers["RateLimit-Policy"] == '"resend";q=1;w=60'
    assert headers["RateLimit"] == f'"resend";r=0;t={retry_after}'
    assert await email_state(pg, rid) == "sent"
    assert await lane_jobs(redis_client, test_settings) == {
        ("email", lane_of(test_settings, rid)): [rid.bytes]}


async def test_concurrent_resends_send_once(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    [rid] = await stored(pg, test_settings, [registrants.make()])
    await set_states(pg, rid, "failed")

    answers = await asyncio.gather(*(resend(door_under_test, rid) for _ in range(6)))

    assert sorted(status for status, _, _ in answers) == [202] + [429] * 5
    assert await email_state(pg, rid) == "pending"
    assert await lane_jobs(redis_client, test_settings) == {
        ("email", lane_of(test_settings, rid)): [rid.bytes]}


async def test_a_resend_of_a_pending_email_puts_it_first_and_a_second_is_429(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    [rid] = await stored(pg, test_settings, [registrants.make()])

    first = await resend(door_under_test, rid)
    second = await resend(door_under_test, rid)

    assert first[:2] == (202, {"email_verification": "pending", "resend_after_seconds": 60})
    assert (second[0], second[1]["error"]["code"]) == (429, "resend_too_soon")
    assert await email_state(pg, rid) == "pending"
    assert await lane_jobs(redis_client, test_settings) == {
        ("email", lane_of(test_settings, rid)): [rid.bytes]}


async def test_the_first_resend_after_a_poll_goes_through_without_a_second_job(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    [rid] = await stored(pg, test_settings, [registrants.make()])
    lane = lane_of(test_settings, rid)
    hold = Partition(lane).priority_hold("email", rid.bytes)
    assert (await poll(door_under_test, rid))[0] == 200  # pending: the poll's job goes in

    pending = await resend(door_under_test, rid)
    jobs_after_pending = await lane_jobs(redis_client, test_settings)
    again = await resend(door_under_test, rid)

    assert pending[0] == 202  # the poll's hold is not a resend's
    assert jobs_after_pending[("email", lane)] == [rid.bytes]  # its job was in the lane already
    assert await redis_client.get(hold) == b"resend"
    assert again[0] == 429


async def test_a_resend_after_a_polled_email_went_out_sends_it_again(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    [rid] = await stored(pg, test_settings, [registrants.make()])
    assert (await poll(door_under_test, rid))[0] == 200  # pending: the poll's job goes in
    await set_states(pg, rid, "sent")  # a worker took the job and sent the email

    status, _, _ = await resend(door_under_test, rid)

    assert status == 202
    assert await email_state(pg, rid) == "pending"
    assert (await lane_jobs(redis_client, test_settings))[
        ("email", lane_of(test_settings, rid))] == [rid.bytes, rid.bytes]


async def test_the_resend_interval_is_configured(
    test_settings: Settings, pg: asyncpg.Connection, redis_client: RedisClient,
    registrants: RegistrantFactory,
) -> None:
    settings = test_settings.model_copy(update={
        "email": test_settings.email.model_copy(update={"resend_interval_seconds": 7})})
    [rid] = await stored(pg, settings, [registrants.make()])
    await set_states(pg, rid, "sent")
    async with running_door(settings) as door:
        status, body, _ = await resend(door, rid)
        await set_states(pg, rid, "sent")
        again, _, headers = await resend(door, rid)

    assert (status, body["resend_after_seconds"]) == (202, 7)
    assert again == 429 and 1 <= int(headers["Retry-After"]) <= 7
    assert headers["RateLimit-Policy"] == '"resend";q=1;w=7'


@pytest.mark.parametrize("text", [None, "not-a-uuid", "3201014506990001"])
async def test_an_unknown_registration_is_404_and_holds_nothing(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, text: str | None,
) -> None:
    status, body, _ = await resend(door_under_test, text or uuid.uuid4())

    assert (status, body["error"]["code"]) == (404, "not_found")
    assert await redis_client.keys("*:verify:*") == []


async def test_an_issued_registration_not_stored_yet_is_409(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    [queued] = seal_people(test_settings, [registrants.make()])

    status, body, _ = await resend(door_under_test, uuid.UUID(bytes=queued.registration_id))

    assert (status, body["error"]["code"]) == (409, "nothing_to_resend")
    assert await redis_client.keys("*:verify:*") == []


@pytest.mark.parametrize(("which", "email"), [
    ("accepted", "verified"), ("accepted", "skipped"), ("duplicate", "skipped"),
    ("ineligible", "skipped"),
])
async def test_nothing_to_resend_is_409_and_holds_nothing(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory, which: str, email: str,
) -> None:
    first = registrants.make()
    people = [first, registrants.same_nik_as(first), registrants.make()]
    ids = await stored(pg, test_settings, people[:2])
    envelopes = seal_people(test_settings, people[2:])
    await pg.execute("INSERT INTO nik_blacklist (nik_hash, reason) VALUES ($1, 'test')",
                     envelopes[0].nik_hash)
    await store_batch(pg, 0, 1, envelopes)
    rid = {"accepted": ids[0], "duplicate": ids[1],
           "ineligible": uuid.UUID(bytes=envelopes[0].registration_id)}[which]
    if which == "accepted":
        await set_states(pg, rid, email)

    status, body, _ = await resend(door_under_test, rid)

    assert (status, body["error"]["code"]) == (409, "nothing_to_resend")
    assert await email_state(pg, rid) == email
    assert await redis_client.keys("*:verify:*") == []


async def test_a_resend_is_subject_to_the_client_limit(
    test_settings: Settings, pg: asyncpg.Connection, redis_client: RedisClient,
) -> None:
    settings = test_settings.model_copy(update={"client_limit": test_settings.client_limit
                                                .model_copy(update={"enabled": True,
                                                                    "burst": 2,
                                                                    "rate_per_second": 0.01})})
    async with running_door(settings) as door:
        answers = [await resend(door, uuid.uuid4()) for _ in range(3)]

    assert [status for status, _, _ in answers] == [404, 404, 429]
    assert answers[2][1]["error"]["code"] == "client_limited"
    assert answers[2][2]["RateLimit-Policy"].startswith('"client";')


@pytest.mark.both_redis
async def test_polling_a_pending_registration_puts_each_pending_check_first_once(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    [rid] = await stored(pg, test_settings, [registrants.make()])
    lane = lane_of(test_settings, rid)

    first = await poll(door_under_test, rid)
    after_first = await lane_jobs(redis_client, test_settings)
    second = await poll(door_under_test, rid)

    assert first[0] == second[0] == 200
    assert (first[1]["email_verification"], first[1]["nik_verification"]) == ("pending", "pending")
    expected = {("email", lane): [rid.bytes], ("nik", lane): [rid.bytes]}
    assert after_first == expected
    assert await lane_jobs(redis_client, test_settings) == expected
    nik_hold = Partition(lane).priority_hold("nik", rid.bytes)
    assert 55_000 < await redis_client.pttl(nik_hold) <= 60_000


@pytest.mark.parametrize(("email", "nik", "first"), [
    ("sent", "pending", ["nik"]),
    ("pending", "verified", ["email"]),
    ("verified", "verified", []),
    ("failed", "mismatch", []),
])
async def test_a_poll_puts_only_pending_checks_first(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory, email: str, nik: str,
    first: list[str],
) -> None:
    [rid] = await stored(pg, test_settings, [registrants.make()])
    await set_states(pg, rid, email, nik)

    status, body = await poll(door_under_test, rid)

    assert (status, body["email_verification"], body["nik_verification"]) == (200, email, nik)
    lane = lane_of(test_settings, rid)
    assert await lane_jobs(redis_client, test_settings) == {
        (kind, lane): [rid.bytes] for kind in first}


async def test_polling_a_duplicate_puts_nothing_first(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    first = registrants.make()
    ids = await stored(pg, test_settings, [first, registrants.same_nik_as(first)])
    # Even were its checks pending, a registration that is not accepted gets no job.
    await set_states(pg, ids[1], "pending")

    status, body = await poll(door_under_test, ids[1])

    assert (status, body["state"]) == (200, "duplicate")
    assert await lane_jobs(redis_client, test_settings) == {}


async def test_redis_down_during_a_poll_still_answers_and_a_resend_is_503(
    test_settings: Settings, pg: asyncpg.Connection, registrants: RegistrantFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = test_settings.model_copy(update={"redis": test_settings.redis.model_copy(
        update={"url": f"redis://127.0.0.1:{free_port()}/0", "cluster": False})})
    [rid] = await stored(pg, test_settings, [registrants.make()])
    await set_states(pg, rid, "sent")
    async with running_door(dead) as door:
        with caplog.at_level(logging.WARNING, logger="gelombang.door"):
            polls = [await poll(door, rid) for _ in range(2)]
        await set_states(pg, rid, "pending")
        status, body, headers = await resend(door, rid)

    assert [(s, b["email_verification"], b["nik_verification"]) for s, b in polls] == [
        (200, "sent", "pending")] * 2
    lines = [r.getMessage() for r in caplog.records if "priority lane" in r.getMessage()]
    assert lines == ["status poll: priority lane not reached (ConnectionError)"]  # once, typed
    assert (status, body["error"]["code"]) == (503, "status_unavailable")
    assert int(headers["Retry-After"]) >= 1


async def test_a_resend_postgres_cannot_finish_gives_its_hold_back(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    [rid] = await stored(pg, test_settings, [registrants.make()])
    await set_states(pg, rid, "sent")

    async def down(registration_id: uuid.UUID) -> None:
        raise StorageUnavailable("TimeoutError")

    with monkeypatch.context() as patched:
        patched.setattr(door_under_test.door.storage, "resend_email", down)
        status, body, headers = await resend(door_under_test, rid)
    retried = await resend(door_under_test, rid)

    assert (status, body["error"]["code"]) == (503, "status_unavailable")
    assert int(headers["Retry-After"]) >= 1
    assert retried[0] == 202  # no hold was left to refuse it
    assert await lane_jobs(redis_client, test_settings) == {
        ("email", lane_of(test_settings, rid)): [rid.bytes]}


async def test_a_resend_whose_job_redis_refused_is_retried_to_one_job(
    door_under_test: DoorUnderTest, pg: asyncpg.Connection, redis_client: RedisClient,
    test_settings: Settings, registrants: RegistrantFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    [rid] = await stored(pg, test_settings, [registrants.make()])
    await set_states(pg, rid, "sent")

    async def refused(kind: str, registration_id: bytes) -> None:
        raise RedisConnectionError("refused")

    with monkeypatch.context() as patched:
        patched.setattr(door_under_test.door.priority, "add", refused)
        status, body, _ = await resend(door_under_test, rid)
    state_between = await email_state(pg, rid)
    retried = await resend(door_under_test, rid)

    assert (status, body["error"]["code"]) == (503, "status_unavailable")
    # Pending with no job in between: the retry finds the hold given back and adds it.
    assert state_between == "pending"
    assert retried[0] == 202
    assert await lane_jobs(redis_client, test_settings) == {
        ("email", lane_of(test_settings, rid)): [rid.bytes]}
