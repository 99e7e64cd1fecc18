"""The waiting room over HTTP (docs/waiting-room.md): tickets instead of bare refusals."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from config.settings import Settings
from intake import metrics, queue_metrics
from loadtest.registrants import Registrant, RegistrantFactory
from queueing.keys import WAVES, WaveKeys
from queueing.redis_client import RedisClient
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.door_helpers import DoorUnderTest, running_door, with_admission

pytestmark = pytest.mark.both_redis

JSON = {"Content-Type": "application/json"}


def room_settings(settings: Settings, rate: float = 1.0, burst: int = 2,
                  **room: object) -> Settings:
    """The test settings with the waiting room on and a small bucket."""
    limited = with_admission(settings, rate_per_second=rate, burst=burst)
    waiting_room = settings.waiting_room.model_copy(
        update={"enabled": True, "tick_seconds": 0.2, **room})
    # One partition: the whole burst in one bucket, so `burst` registrations fill it.
    queue = settings.queue.model_copy(update={"partitions": 1})
    return limited.model_copy(update={"waiting_room": waiting_room, "queue": queue})


@pytest.fixture
async def room(test_settings: Settings, redis_client: RedisClient
               ) -> AsyncIterator[DoorUnderTest]:
    async with running_door(room_settings(test_settings)) as door:
        yield door


async def register(d: DoorUnderTest, person: Registrant, key: str | None = None,
                   ticket: str | None = None) -> tuple[int, dict[str, str], Any]:
    headers = dict(JSON)
    if key is not None:
        headers["Idempotency-Key"] = key
    if ticket is not None:
        headers["Authorization"] = f"Queue {ticket}"
    async with d.public.post("/v1/registrations", data=orjson.dumps(person.body()),
                             headers=headers) as response:
        return response.status, dict(response.headers), orjson.loads(await response.read())


async def poll(d: DoorUnderTest, ticket: str) -> tuple[int, Any]:
    async with d.public.get(f"/v1/queue/tickets/{ticket}") as response:
        return response.status, orjson.loads(await response.read())


async def until_turn(d: DoorUnderTest, ticket: str, seconds: float = 20.0) -> dict[str, Any]:
    """Poll (as the form does, but quicker) until the ticket's turn comes."""
    async with asyncio.timeout(seconds):
        while True:
            status, body = await poll(d, ticket)
            assert status == 200, body
            if body["state"] == "your_turn":
                return dict(body)
            ticket = body["ticket"]
            await asyncio.sleep(0.1)


async def fill_bucket(d: DoorUnderTest, registrants: RegistrantFactory, count: int = 2) -> None:
    for _ in range(count):
        status, _, _ = await register(d, registrants.make())
        assert status == 202


async def test_a_refused_registration_gets_a_ticket_with_its_place(
        room: DoorUnderTest, registrants: RegistrantFactory) -> None:
    await fill_bucket(room, registrants)
    status, headers, body = await register(room, registrants.make())
    assert status == 429
    assert body["error"]["code"] == "queued"
    queue = body["queue"]
    assert queue["state"] == "waiting" and queue["position"] == 1 and queue["ahead"] == 0
    assert headers["Location"] == queue["status_url"]
    assert int(headers["Retry-After"]) >= 1
    assert queue["eta_seconds"]["p50"] <= queue["eta_seconds"]["p90"]


async def test_the_same_nik_gets_the_same_place_from_any_tab(
        room: DoorUnderTest, registrants: RegistrantFactory) -> None:
    await fill_bucket(room, registrants)
    person = registrants.make()
    _, _, first = await register(room, person, key="tab-1")
    _, _, other = await register(room, registrants.make())
    # Another tab, another key, the same NIK (even with other details): the same place.
    _, _, again = await register(room, registrants.same_nik_as(person), key="tab-2")
    assert first["queue"]["ticket_id"] == again["queue"]["ticket_id"]
    assert first["queue"]["position"] == again["queue"]["position"] == 1
    assert other["queue"]["position"] == 2


async def test_a_ticket_admits_on_its_turn_once_and_bypasses_the_bucket(
        room: DoorUnderTest, registrants: RegistrantFactory, redis_client: RedisClient) -> None:
    await fill_bucket(room, registrants)
    person = registrants.make()
    _, _, body = await register(room, person, key="tab-1")
    turn = await until_turn(room, body["queue"]["ticket"])
    assert turn["turn_valid_until"] is not None
    used, waits = queue_metrics.flushed_count("used"), queue_metrics.QUEUE_WAIT_SECONDS._sum.get()
    status, _, admitted = await register(room, person, key="tab-1", ticket=turn["ticket"])
    assert status == 202
    metrics.flush()
    assert queue_metrics.flushed_count("used") == used + 1
    assert queue_metrics.QUEUE_WAIT_SECONDS._sum.get() > waits
    # The same request again (its key) is a replay, as any keyed retry.
    status, _, again = await register(room, person, key="tab-1", ticket=turn["ticket"])
    assert status == 202 and again["registration_id"] == admitted["registration_id"]
    # Another request with the used ticket admits nothing: 409 with the registration.
    status, _, other = await register(room, person, key="tab-2", ticket=turn["ticket"])
    assert status == 409 and other["error"]["code"] == "ticket_used"
    assert other["queue"]["registration_id"] == admitted["registration_id"]
    status, polled = await poll(room, turn["ticket"])
    assert status == 409 and polled["queue"]["state"] == "registered"
    # Without the ticket, once the line is empty, the key still replays (never a second
    # registration for a client that retries a lost 202).
    status, _, replay = await register(room, person, key="tab-1")
    assert status == 202 and replay["registration_id"] == admitted["registration_id"]
    metrics.flush()
    assert queue_metrics.flushed_count("used") == used + 1


async def test_an_unkeyed_retry_on_a_turn_replays_under_the_ticket(
        room: DoorUnderTest, registrants: RegistrantFactory) -> None:
    await fill_bucket(room, registrants)
    person = registrants.make()
    _, _, body = await register(room, person)
    turn = await until_turn(room, body["queue"]["ticket"])
    status, _, admitted = await register(room, person, ticket=turn["ticket"])
    assert status == 202
    status, _, again = await register(room, person, ticket=turn["ticket"])
    assert status == 202 and again["registration_id"] == admitted["registration_id"]


async def test_a_forged_or_foreign_ticket_is_refused(
        room: DoorUnderTest, registrants: RegistrantFactory) -> None:
    await fill_bucket(room, registrants)
    person = registrants.make()
    _, _, body = await register(room, person)
    ticket = body["queue"]["ticket"]
    turn = await until_turn(room, ticket)
    head, _, mac = turn["ticket"].rpartition(".")
    forged = f"{head}.{'A' * len(mac)}"
    status, _, refused = await register(room, person, ticket=forged)
    assert status == 403 and refused["error"]["code"] == "invalid_ticket"
    assert (await poll(room, forged))[0] == 403
    # Someone else's registration with this person's ticket.
    status, _, refused = await register(room, registrants.make(), ticket=turn["ticket"])
    assert status == 403 and refused["error"]["code"] == "invalid_ticket"


async def test_leaving_frees_the_place_for_everyone_behind(
        room: DoorUnderTest, registrants: RegistrantFactory) -> None:
    await fill_bucket(room, registrants)
    tickets = []
    for _ in range(3):
        _, _, body = await register(room, registrants.make())
        tickets.append(body["queue"])
    first, _, third = tickets
    assert third["ahead"] == 2
    async with room.public.delete(first["status_url"]) as response:
        assert response.status == 204
    await asyncio.sleep(0.5)  # a tick: the door learns the gone position
    status, polled = await poll(room, third["ticket"])
    assert status == 200 and polled["ahead"] <= 1
    status, gone = await poll(room, first["ticket"])
    assert status == 410 and gone["queue"]["state"] == "expired"


async def test_join_explicitly_and_recover_a_lost_ticket(
        room: DoorUnderTest, registrants: RegistrantFactory) -> None:
    person = registrants.make()
    async with room.public.post("/v1/queue/tickets", data=orjson.dumps({"nik": person.nik}),
                                headers=JSON) as response:
        assert response.status == 202
        first = orjson.loads(await response.read())
    async with room.public.post("/v1/queue/tickets", data=orjson.dumps({"nik": person.nik}),
                                headers=JSON) as response:
        again = orjson.loads(await response.read())
    assert again["ticket_id"] == first["ticket_id"]
    assert again["position"] == first["position"]
    async with room.public.post("/v1/queue/tickets", data=b'{"nik": "12"}',
                                headers=JSON) as response:
        assert response.status == 422
        assert orjson.loads(await response.read())["error"]["fields"] == {
            "nik": "invalid_format"}


async def test_a_door_restart_keeps_every_place(
        test_settings: Settings, redis_client: RedisClient,
        registrants: RegistrantFactory) -> None:
    settings = room_settings(test_settings, rate=0.001, burst=1)
    async with running_door(settings) as door:
        await fill_bucket(door, registrants, 1)
        people = [registrants.make() for _ in range(3)]
        before = [(await register(door, person))[2]["queue"] for person in people]
    async with running_door(settings) as door:
        for person, place in zip(people, before, strict=True):
            status, polled = await poll(door, place["ticket"])
            assert status == 200 and polled["position"] == place["position"]
            assert polled["ahead"] == place["ahead"]
            _, _, again = await register(door, person)
            assert again["queue"]["position"] == place["position"]


async def test_the_prequeue_is_drawn_by_the_published_seed(
        test_settings: Settings, redis_client: RedisClient,
        registrants: RegistrantFactory) -> None:
    now = int(time.time())
    wave = WaveKeys("w1")
    seed = bytes(range(32))
    await redis_client.hset(wave.state, mapping={
        "prequeue_from": now - 10, "opens_at": now + 2, "closes_at": now + 3600,
        "seed": seed.hex(), "seed_sha256": hashlib.sha256(seed).hexdigest()})
    await redis_client.hset(WAVES, "w1", orjson.dumps(
        {"prequeue_from": now - 10, "opens_at": now + 2, "closes_at": now + 3600}))
    settings = room_settings(test_settings, rate=1000.0, burst=1000)
    async with running_door(settings) as door:
        tickets = []
        for _ in range(6):
            status, headers, body = await register(door, registrants.make())
            assert status == 429 and body["queue"]["state"] == "prequeue"
            assert body["queue"]["position"] is None
            assert int(headers["Retry-After"]) <= 3
            tickets.append(body["queue"])
        await asyncio.sleep(max(0.0, now + 2.5 - time.time()))
        positions = {}
        for queue in tickets:
            status, polled = await poll(door, queue["ticket"])
            assert status == 200, polled
            assert polled["state"] in ("waiting", "your_turn")
            positions[queue["ticket_id"]] = polled["position"]

    def lottery(ticket_id: str) -> bytes:
        return hmac.new(seed, bytes.fromhex(ticket_id), hashlib.sha256).digest()[:16]

    by_lottery = sorted(positions, key=lottery)
    assert [positions[tid] for tid in by_lottery] == list(range(1, 7))


async def test_a_prequeue_eta_foretells_the_draw_and_spreads_the_comeback(
        test_settings: Settings, redis_client: RedisClient,
        registrants: RegistrantFactory) -> None:
    now = int(time.time())
    seed = bytes(range(32, 64))
    schedule: dict[Any, Any] = {"prequeue_from": now - 10, "opens_at": now + 8,
                                "closes_at": now + 3600}
    await redis_client.hset(WaveKeys("w3").state, mapping={**schedule, "seed": seed.hex()})
    await redis_client.hset(WAVES, "w3", orjson.dumps(schedule))
    # 20 in the pre-queue, released at one every 20 s: the draw's order spreads the ETAs
    # over 400 s after the opening.
    async with running_door(room_settings(test_settings, rate=0.05, burst=1)) as door:
        tickets = [(await register(door, registrants.make()))[2]["queue"] for _ in range(20)]
        await asyncio.sleep(0.5)  # a tick: the door knows the pre-queue's size
        polled = [(await poll(door, queue["ticket"]))[1] for queue in tickets]

    def lottery(ticket_id: str) -> bytes:
        return hmac.new(seed, bytes.fromhex(ticket_id), hashlib.sha256).digest()[:16]

    in_draw_order = sorted(polled, key=lambda queue: lottery(queue["ticket_id"]))
    etas = [queue["eta_seconds"]["p50"] for queue in in_draw_order]
    assert etas == sorted(etas) and etas[-1] - etas[0] > 200
    # Told to come back before their turn: the first in the draw at the opening (in
    # under 8 s), the last after a full poll interval (20 s).
    polls = [queue["poll_after_seconds"] for queue in in_draw_order]
    assert {queue["state"] for queue in polled} == {"prequeue"}
    assert polls[0] <= 8 and polls[-1] == 20


async def test_the_line_and_its_tickets_are_in_the_metrics(
        test_settings: Settings, redis_client: RedisClient,
        registrants: RegistrantFactory) -> None:
    async with running_door(room_settings(test_settings, rate=0.5, burst=1)) as room:
        await fill_bucket(room, registrants, 1)
        for _ in range(3):
            _, _, body = await register(room, registrants.make())
        await poll(room, body["queue"]["ticket"])
        await asyncio.sleep(0.5)  # a tick
        async with room.admin.get("/metrics", headers={
                "Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}) as response:
            text = await response.text()
    # Released at 0.5 a second: none or one of the three has had its turn.
    assert re.search(r'gelombang_queue_waiting\{wave="standing"\} [23]\.0', text)
    assert 'gelombang_queue_tail{wave="standing"} 3.0' in text
    assert 'gelombang_queue_release_rate{wave="standing"} 0.5' in text
    assert 'gelombang_queue_tickets_total{event="polled"}' in text
    ticks = [line for line in text.splitlines()
             if line.startswith('gelombang_queue_redis_calls_total{kind="tick"} ')]
    assert ticks and float(ticks[0].split()[1]) > 0


async def test_a_closed_wave_serves_its_line_and_lets_no_one_join(
        test_settings: Settings, redis_client: RedisClient,
        registrants: RegistrantFactory) -> None:
    now = int(time.time())
    schedule: dict[Any, Any] = {"prequeue_from": now - 10, "opens_at": now - 5,
                                "closes_at": now + 2}
    await redis_client.hset(WaveKeys("w2").state, mapping=schedule)
    await redis_client.hset(WAVES, "w2", orjson.dumps(schedule))
    settings = room_settings(test_settings, rate=0.5, burst=1)
    async with running_door(settings) as door:
        await fill_bucket(door, registrants, 1)
        places = [(await register(door, registrants.make()))[2]["queue"] for _ in range(3)]
        assert {place["wave"] for place in places} == {"w2"}
        await asyncio.sleep(max(0.0, now + 2.5 - time.time()))
        status, _, late = await register(door, registrants.make())
        assert status == 503 and late["error"]["code"] == "intake_closed"
        # Still served after the closing: the last in line gets its turn.
        turn = await until_turn(door, places[-1]["ticket"], seconds=20)
        assert turn["wave"] == "w2"
