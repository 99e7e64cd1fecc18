"""The waiting room's line under concurrency, idleness, turns and lost writes."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from config.settings import Settings
from intake import queue_metrics
from loadtest.registrants import RegistrantFactory
from queueing.keys import STANDING_WAVE, WAVES, WaveKeys
from queueing.line import Line
from queueing.redis_client import RedisClient
from tests.intake.door_helpers import DoorUnderTest, running_door
from tests.intake.test_waiting_room import fill_bucket, poll, register, room_settings, until_turn
from tests.support import eventually

# On a Redis Cluster only where the cluster can change the outcome: joins grouped and
# racing from two doors into the line's multi-key script, and a wave whose keys hash to
# another slot than the standing wave's (and the waves' list, to a third). The rest is the
# line's arithmetic and timing, the same script on either kind (test_waiting_room.py runs
# the line's every call on both).


def line_of(door: DoorUnderTest) -> Line:
    line = door.door.admission.line
    assert line is not None
    return line


@pytest.mark.both_redis
async def test_two_doors_hand_out_exact_distinct_positions_under_concurrent_joins(
        test_settings: Settings, redis_client: RedisClient,
        registrants: RegistrantFactory) -> None:
    settings = room_settings(test_settings, rate=0.001, burst=1)
    async with running_door(settings) as one, running_door(settings) as two:
        await fill_bucket(one, registrants, 1)
        people = [registrants.make() for _ in range(60)]
        answers = await asyncio.gather(*(
            register(one if index % 2 else two, person) for index, person in enumerate(people)))
        positions = sorted(body["queue"]["position"] for _, _, body in answers)
        assert positions == list(range(1, 61))
        await asyncio.sleep(0.5)  # a tick at each door
        for door in (one, two):
            for _, _, body in answers:
                status, polled = await poll(door, body["queue"]["ticket"])
                assert status == 200
                assert polled["ahead"] == body["queue"]["position"] - 1


async def test_a_poll_of_a_waiting_ticket_makes_no_redis_round_trip(
        test_settings: Settings, redis_client: RedisClient,
        registrants: RegistrantFactory) -> None:
    settings = room_settings(test_settings, rate=0.001, burst=1, tick_seconds=10.0)
    async with running_door(settings) as door:
        await fill_bucket(door, registrants, 1)
        _, _, body = await register(door, registrants.make())
        ticket = body["queue"]["ticket"]
        before = queue_metrics.queue_redis_calls()
        for _ in range(50):
            status, polled = await poll(door, ticket)
            assert status == 200 and polled["state"] == "waiting"
        assert queue_metrics.queue_redis_calls() == before
        # A join is a round trip: the counter does count.
        await register(door, registrants.make())
        assert queue_metrics.queue_redis_calls() > before


async def test_an_idle_ticket_is_skipped_and_no_longer_counted_ahead(
        test_settings: Settings, redis_client: RedisClient,
        registrants: RegistrantFactory) -> None:
    settings = room_settings(test_settings, rate=0.001, burst=1, idle_seconds=1.0)
    async with running_door(settings) as door:
        await fill_bucket(door, registrants, 1)
        idle_person = registrants.make()
        _, _, idle = await register(door, idle_person)
        _, _, active = await register(door, registrants.make())
        assert active["queue"]["ahead"] == 1
        ticket = active["queue"]["ticket"]
        async with asyncio.timeout(10):
            while True:  # polled (so seen); the idle one never is
                status, polled = await poll(door, ticket)
                if polled["ahead"] == 0:
                    break
                await asyncio.sleep(0.2)
        status, body = await poll(door, idle["queue"]["ticket"])
        assert status == 410 and body["queue"]["state"] == "expired"
        # Coming back, the idle one queues again, at the back.
        _, _, back = await register(door, registrants.same_nik_as(idle_person))
        assert back["queue"]["position"] == 3


async def test_a_turn_not_taken_in_time_expires(
        test_settings: Settings, redis_client: RedisClient,
        registrants: RegistrantFactory) -> None:
    settings = room_settings(test_settings, rate=5.0, burst=1, turn_seconds=1.0)
    async with running_door(settings) as door:
        await fill_bucket(door, registrants, 1)
        person = registrants.make()
        _, _, body = await register(door, person)
        turn = await until_turn(door, body["queue"]["ticket"])
        # turn_valid_until is shown to the second, rounded down.
        await asyncio.sleep(max(0.0, _unix(turn["turn_valid_until"]) - time.time() + 1.2))
        status, _, late = await register(door, person, ticket=turn["ticket"])
        assert status == 410 and late["error"]["code"] == "ticket_expired"


async def test_a_keyed_retry_of_an_admitted_registration_replays_while_the_line_waits(
        test_settings: Settings, redis_client: RedisClient,
        registrants: RegistrantFactory) -> None:
    settings = room_settings(test_settings, rate=0.001, burst=1)
    async with running_door(settings) as door:
        person = registrants.make()
        status, _, first = await register(door, person, key="k-1")
        assert status == 202
        await register(door, registrants.make())  # refused: the line now has someone
        await eventually(_async(line_of(door).queues_first), 5, "the door sees the line")
        status, _, again = await register(door, person, key="k-1")
        assert status == 202 and again["registration_id"] == first["registration_id"]
        status, _, newcomer = await register(door, registrants.make(), key="k-2")
        assert status == 429 and newcomer["queue"]["position"] == 2


async def test_a_line_that_lost_writes_never_hands_out_a_position_again(
        test_settings: Settings, redis_client: RedisClient,
        registrants: RegistrantFactory) -> None:
    settings = room_settings(test_settings, rate=0.001, burst=1)
    keys = WaveKeys(STANDING_WAVE)
    async with running_door(settings) as door:
        await fill_bucket(door, registrants, 1)
        for _ in range(5):
            await register(door, registrants.make())
        await asyncio.sleep(0.5)
        # A failover to a replica that had not received the last joins.
        await redis_client.hset(keys.state, "tail", 2)
        await asyncio.sleep(0.5)  # the door's tick raises it back to what it saw
        _, _, body = await register(door, registrants.make())
        assert body["queue"]["position"] == 6


async def test_the_line_is_served_at_the_release_rate(
        test_settings: Settings, redis_client: RedisClient,
        registrants: RegistrantFactory) -> None:
    settings = room_settings(test_settings, rate=0.001, burst=1, release_rate=10.0)
    async with running_door(settings) as door:
        await fill_bucket(door, registrants, 1)
        await asyncio.gather(*(register(door, registrants.make()) for _ in range(60)))
        line = line_of(door)
        await asyncio.sleep(0.5)
        start, started = line.view.served, time.monotonic()
        await asyncio.sleep(3.0)
        rate = (line.view.served - start) / (time.monotonic() - started)
        assert 6.0 <= rate <= 14.0


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return check()
    return checked


def _unix(rfc3339: str) -> float:
    return datetime.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC).timestamp()


@pytest.mark.both_redis
async def test_a_pre_queue_starts_on_time_at_a_door_between_its_ticks(
        test_settings: Settings, redis_client: RedisClient,
        registrants: RegistrantFactory) -> None:
    start = int(time.time()) + 2
    schedule: dict[Any, Any] = {"prequeue_from": start, "opens_at": start + 60,
                                "closes_at": start + 3600}
    await redis_client.hset(WaveKeys("w4").state, mapping={**schedule, "seed": "ab" * 32})
    await redis_client.hset(WAVES, "w4", orjson.dumps(schedule))
    settings = room_settings(test_settings, rate=100.0, burst=100, tick_seconds=10.0)
    async with running_door(settings) as door:
        status, _, _ = await register(door, registrants.make())
        assert status == 202  # before the pre-queue: the bucket
        await asyncio.sleep(max(0.0, start - time.time() + 0.1))
        # The door's next tick is seconds away; the pre-queue is in force all the same.
        status, _, body = await register(door, registrants.make())
        assert status == 429 and body["queue"]["state"] == "prequeue"
        assert body["queue"]["wave"] == "w4"
