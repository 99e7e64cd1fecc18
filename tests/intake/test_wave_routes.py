"""GET /v1/queue/waves/{wave} and …/draw: the seed after the opening only, the draw in order."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import Any

import pytest

from intake import wave_routes
from intake.wave_routes import WaveReads
from queueing.keys import WAVES, WaveKeys
from queueing.redis_client import RedisClient
from queueing.waves import WaveSchedule, schedule_wave
from tests.intake.door_helpers import DoorUnderTest

pytestmark = pytest.mark.both_redis


async def get(d: DoorUnderTest, path: str) -> tuple[int, Any]:
    async with d.public.get(path) as response:
        return response.status, await response.json()


async def scheduled(redis: RedisClient, wave: str, opens_in: int) -> WaveSchedule:
    now = int(time.time())
    schedule = WaveSchedule(wave, now + opens_in - 100, now + opens_in, now + opens_in + 3600)
    await schedule_wave(redis, schedule, actor="t", source="s", now=now - 200)
    return schedule


async def seed_of(redis: RedisClient, wave: str) -> bytes:
    raw: Any = await redis.hget(WaveKeys(wave).state, "seed")
    return bytes.fromhex(raw.decode())


async def test_before_the_opening_only_the_seeds_hash_is_published(
        door_under_test: DoorUnderTest, redis_client: RedisClient) -> None:
    await scheduled(redis_client, "later", opens_in=50)
    status, body = await get(door_under_test, "/v1/queue/waves/later")
    seed = await seed_of(redis_client, "later")
    assert status == 200
    assert body["seed"] is None
    assert body["seed_sha256"] == hashlib.sha256(seed).hexdigest()
    assert body["phase"] == "prequeue"
    assert (body["drawn"], body["served"], body["tail"]) == (0, 0, 0)
    assert body["opens_at"].endswith("Z")
    status, body = await get(door_under_test, "/v1/queue/waves/later/draw")
    assert (status, body["error"]["code"]) == (409, "wave_not_open")


async def test_after_the_opening_the_seed_and_the_draw_can_be_checked(
        door_under_test: DoorUnderTest, redis_client: RedisClient) -> None:
    await scheduled(redis_client, "opened", opens_in=-10)
    seed = await seed_of(redis_client, "opened")
    # As the line's script writes them: lottery key (16 bytes) || ticket id (16 bytes).
    ticket_ids = [os.urandom(16) for _ in range(25)]
    members = {hmac.digest(seed, tid, "sha256")[:16] + tid: 0 for tid in ticket_ids}
    await redis_client.zadd(WaveKeys("opened").draw, members)
    await redis_client.hset(WaveKeys("opened").state, mapping={"drawn": 25, "served": 3,
                                                               "tail": 25})
    status, body = await get(door_under_test, "/v1/queue/waves/opened")
    assert status == 200
    assert hashlib.sha256(bytes.fromhex(body["seed"])).hexdigest() == body["seed_sha256"]
    assert (body["drawn"], body["served"], body["tail"], body["phase"]) == (25, 3, 25, "open")
    status, page = await get(door_under_test, "/v1/queue/waves/opened/draw")
    assert status == 200
    assert page["wave"] == "opened" and page["from"] == 0
    # The draw's order is the members' (lexical) order: what anyone can recompute.
    published = bytes.fromhex(body["seed"])
    expected = sorted(ticket_ids, key=lambda tid: hmac.digest(published, tid, "sha256"))
    assert page["ticket_ids"] == [tid.hex() for tid in expected]
    status, rest = await get(door_under_test, "/v1/queue/waves/opened/draw?from=20")
    assert (status, rest["from"], rest["ticket_ids"]) == (200, 20, page["ticket_ids"][20:])
    status, past = await get(door_under_test, "/v1/queue/waves/opened/draw?from=99")
    assert (status, past["ticket_ids"]) == (200, [])


async def test_a_draw_page_holds_at_most_the_page_size(
        door_under_test: DoorUnderTest, redis_client: RedisClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wave_routes, "DRAW_PAGE", 4)
    await scheduled(redis_client, "paged", opens_in=-10)
    await redis_client.zadd(WaveKeys("paged").draw, {bytes([n]) * 32: 0 for n in range(10)})
    _, first = await get(door_under_test, "/v1/queue/waves/paged/draw")
    _, last = await get(door_under_test, "/v1/queue/waves/paged/draw?from=8")
    assert first["ticket_ids"] == [(bytes([n]) * 16).hex() for n in range(4)]
    assert last["ticket_ids"] == [(bytes([n]) * 16).hex() for n in (8, 9)]


@pytest.mark.parametrize("path", ["/v1/queue/waves/nope", "/v1/queue/waves/nope/draw",
                                  "/v1/queue/waves/Bad_Name", "/v1/queue/waves/a%7Db/draw"])
async def test_an_unknown_wave_is_404(door_under_test: DoorUnderTest,
                                      redis_client: RedisClient, path: str) -> None:
    status, body = await get(door_under_test, path)
    assert (status, body["error"]["code"]) == (404, "not_found")


@pytest.mark.parametrize("start", ["-1", "x", "1.5", "9" * 13, ""])
async def test_a_bad_from_is_422(door_under_test: DoorUnderTest, redis_client: RedisClient,
                                 start: str) -> None:
    await scheduled(redis_client, "opened", opens_in=-10)
    status, body = await get(door_under_test, f"/v1/queue/waves/opened/draw?from={start}")
    assert (status, body["error"]["code"]) == (422, "validation_failed")
    assert body["error"]["fields"] == {"from": "invalid_format"}


async def test_the_standing_line_has_no_schedule_seed_or_draw(
        door_under_test: DoorUnderTest, redis_client: RedisClient) -> None:
    status, body = await get(door_under_test, "/v1/queue/waves/standing")
    assert status == 200
    assert (body["opens_at"], body["seed"], body["seed_sha256"], body["phase"]) == (
        None, None, None, "open")
    status, page = await get(door_under_test, "/v1/queue/waves/standing/draw")
    assert (status, page["ticket_ids"]) == (200, [])


async def test_reads_are_kept_a_second_and_settled_pages_longer(
        redis_client: RedisClient) -> None:
    clock = [0.0]
    reads = WaveReads(clock=lambda: clock[0])
    schedule = await scheduled(redis_client, "kept", opens_in=-10)
    assert await reads.schedule(redis_client, "kept") == schedule
    await redis_client.hdel(WAVES, "kept")
    assert await reads.schedule(redis_client, "kept") == schedule  # within the second
    clock[0] = 1.0
    assert await reads.schedule(redis_client, "kept") is None
    draw = WaveKeys("kept").draw
    await redis_client.zadd(draw, {b"a" * 32: 0})
    now = schedule.opens_at + 1
    assert b"61" * 16 in await reads.page(redis_client, schedule, 0, now)
    await redis_client.zadd(draw, {b"0" * 32: 0})
    # Just after the opening a page is read each time; once settled, it is kept.
    assert b"30" * 16 in await reads.page(redis_client, schedule, 0, now)
    settled = schedule.opens_at + wave_routes.SETTLE_SECONDS
    kept = await reads.page(redis_client, schedule, 0, settled)
    await redis_client.delete(draw)
    assert await reads.page(redis_client, schedule, 0, settled) == kept
