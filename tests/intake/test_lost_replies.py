"""POST /v1/registrations while Redis holds a group unanswered: 202, or a truthful 503.

The door's own Redis is paused (SIGSTOP) with the requests sent to it, so
they sit in its socket and run when it goes on: from the door, a Redis that
took a group and stalled before replying. Whatever the door answers must be
true of what Redis stored.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from config.settings import Settings
from gelombang.services import RedisServer
from loadtest.registrants import Registrant, RegistrantFactory
from queueing.redis_client import connect
from tests.intake.door_helpers import DoorUnderTest, running_door, with_admission
from tests.support import leaked, queued_ids

URL = "/v1/registrations"
TIMEOUT = 0.5
CHECK_SECONDS = 1.5


@pytest.fixture
def door_settings(own_redis: RedisServer, test_settings: Settings) -> Settings:
    settings = test_settings.model_copy(update={"redis": test_settings.redis.model_copy(
        update={"url": own_redis.url, "cluster": False, "cluster_seeds": [],
                "timeout_seconds": TIMEOUT, "outcome_check_seconds": CHECK_SECONDS})})
    return with_admission(settings, rate_per_second=10_000.0, burst=10_000)


@pytest.fixture
async def door(door_settings: Settings) -> AsyncIterator[DoorUnderTest]:
    async with running_door(door_settings) as d:
        yield d


async def _post(d: DoorUnderTest, person: Registrant, key: str | None) -> tuple[
        int, dict[str, str], Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with d.public.post(URL, data=orjson.dumps(person.body()), headers=headers) as reply:
        return reply.status, dict(reply.headers), orjson.loads(await reply.read())


async def _post_while_paused(d: DoorUnderTest, server: RedisServer,
                             people: list[tuple[Registrant, str | None]],
                             paused: float) -> list[tuple[int, dict[str, str], Any]]:
    # Warm: Redis is connected and has the scripts, so the pause catches the group.
    status, _, _ = await _post(d, RegistrantFactory().make(), None)
    assert status == 202
    server.pause()
    try:
        answers = [asyncio.create_task(_post(d, person, key)) for person, key in people]
        await asyncio.sleep(paused)
    finally:
        server.resume()
    return list(await asyncio.gather(*answers))


async def _queued(settings: Settings) -> set[str]:
    redis = connect(settings.redis)
    try:
        return set(await queued_ids(redis, settings.queue.partitions))
    finally:
        await redis.aclose()


def _people(count: int) -> list[tuple[Registrant, str | None]]:
    factory = RegistrantFactory()
    # Keyed and keyless alternately, the first keyed (it is the likeliest to ride
    # in the group Redis holds: the others arrive while it is in flight).
    return [(factory.make(), None if i % 2 else f"lost-{uuid.uuid4().hex}")
            for i in range(count)]


async def test_a_group_redis_held_past_the_timeout_is_answered_202(
        door: DoorUnderTest, door_settings: Settings, own_redis: RedisServer) -> None:
    people = _people(8)
    answers = await _post_while_paused(door, own_redis, people, 2 * TIMEOUT)

    accepted = [body["registration_id"] for status, _, body in answers if status == 202]
    assert accepted, "the group in flight must be found out and answered 202"
    queued = await _queued(door_settings)
    assert set(accepted) <= queued
    # The rest were shed unsent while the door found out (503 queue_unavailable):
    # true, since nothing of theirs is queued.
    assert all(body["error"]["code"] == "queue_unavailable"
               for status, _, body in answers if status != 202), answers
    assert len(queued) == len(accepted) + 1  # and the warm-up


async def test_a_group_whose_outcome_stays_unknown_is_answered_outcome_unknown(
        door: DoorUnderTest, door_settings: Settings, own_redis: RedisServer) -> None:
    people = _people(6)
    answers = await _post_while_paused(door, own_redis, people,
                                       TIMEOUT + CHECK_SECONDS + 1.0)

    codes = [body["error"]["code"] for _, _, body in answers]
    assert {status for status, _, _ in answers} == {503}
    assert "outcome_unknown" in codes, codes
    assert set(codes) <= {"outcome_unknown", "queue_unavailable"}
    for _, headers, body in answers:
        assert int(headers["Retry-After"]) >= 1
        assert leaked(orjson.dumps(body), [person for person, _ in people]) == 0
    queued = await _queued(door_settings)
    # "Unknown" is no more than that: the group Redis held ran when it went on;
    # calls that never got past a connection's opening did not. Nothing else ran.
    assert 2 <= len(queued) <= codes.count("outcome_unknown") + 1  # and the warm-up
    # The same key again: 202, with the registration Redis took if it took one.
    replayed, new = 0, set()
    for (person, key), code in zip(people, codes, strict=True):
        if key is not None and code == "outcome_unknown":
            status, _, body = await _post(door, person, key)
            assert status == 202
            if body["registration_id"] in queued:
                replayed += 1
            else:
                new.add(body["registration_id"])
    assert replayed >= 1  # the first, keyed, rode in the group Redis held
    # A key Redis had taken got its original id back, nothing new was queued for it.
    assert await _queued(door_settings) == queued | new
