"""The admin port's waves: list, schedule, cancel; the token, the refusals, the audit."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
import pytest

from config.settings import Settings, WaveConfig
from intake.waves_admin import checked_schedule
from queueing.keys import AUDIT_STREAM, WAVES, WaveKeys
from queueing.redis_client import RedisClient
from queueing.waves import WaveSchedule, read_waves, schedule_wave
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.door_helpers import DoorUnderTest, running_door
from tests.support import stream_range

pytestmark = pytest.mark.both_redis

AUTH = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}


async def put(d: DoorUnderTest, wave: str, body: Any, *, raw: bytes | None = None,
              content_type: str = "application/json") -> tuple[int, Any]:
    data = raw if raw is not None else orjson.dumps(body)
    async with d.admin.put(f"/admin/v1/waves/{wave}", data=data,
                           headers={"Content-Type": content_type, **AUTH}) as response:
        return response.status, orjson.loads(await response.read())


async def delete(d: DoorUnderTest, wave: str) -> tuple[int, Any]:
    async with d.admin.delete(f"/admin/v1/waves/{wave}", headers=AUTH) as response:
        return response.status, orjson.loads(await response.read())


async def listing(d: DoorUnderTest) -> Any:
    async with d.admin.get("/admin/v1/waves", headers=AUTH) as response:
        assert response.status == 200
        return await response.json()


async def actions(redis: RedisClient) -> list[tuple[str, dict[str, Any]]]:
    return [(fields[b"action"].decode(), orjson.loads(fields[b"changes"]))
            for _, fields in await stream_range(redis, AUDIT_STREAM)]


def future(now: int | None = None) -> dict[str, int]:
    now = int(time.time()) if now is None else now
    return {"prequeue_from": now + 3600, "opens_at": now + 7200, "closes_at": now + 10800}


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/admin/v1/waves"), ("PUT", "/admin/v1/waves/w1"), ("DELETE", "/admin/v1/waves/w1")])
async def test_the_wave_routes_need_the_token(door_under_test: DoorUnderTest,
                                              redis_client: RedisClient, method: str,
                                              path: str) -> None:
    async with door_under_test.admin.request(
            method, path, data=orjson.dumps(future()),
            headers={"Content-Type": "application/json",
                     "Authorization": "Bearer wrong"}) as response:
        assert response.status == 401
    assert await redis_client.exists(WAVES, AUDIT_STREAM) == 0


async def test_a_wave_is_scheduled_listed_and_audited_once(door_under_test: DoorUnderTest,
                                                           redis_client: RedisClient) -> None:
    times = future()
    status, body = await put(door_under_test, "gelombang-1", times)
    assert status == 200, body
    seed: Any = await redis_client.hget(WaveKeys("gelombang-1").state, "seed")
    assert body["created"] is True
    assert body["seed_sha256"] == hashlib.sha256(bytes.fromhex(seed.decode())).hexdigest()
    assert body["phase"] == "scheduled"
    assert seed.decode() not in orjson.dumps(body).decode()
    assert await read_waves(redis_client) == [WaveSchedule("gelombang-1", **times)]
    # One entry, the handler's own, in the transaction of the change.
    assert await actions(redis_client) == [
        ("waves.schedule", {"wave": "gelombang-1", **times, "created": True})]
    listed = await listing(door_under_test)
    [wave] = listed["waves"]
    assert wave["wave"] == "gelombang-1" and wave["phase"] == "scheduled"
    assert listed["in_force"]["wave"] == "standing"  # not started yet


async def test_rfc3339_times_are_taken(door_under_test: DoorUnderTest,
                                       redis_client: RedisClient) -> None:
    status, body = await put(door_under_test, "w2", {
        "prequeue_from": "2099-12-07T03:00:00Z", "opens_at": "2099-12-07T10:00:00+07:00",
        "closes_at": 4_100_400_000})
    assert status == 200, body
    [wave] = await read_waves(redis_client)
    assert (wave.prequeue_from, wave.opens_at) == (4_100_295_600, 4_100_295_600)
    assert (body["prequeue_from"], body["opens_at"]) == ("2099-12-07T03:00:00Z",) * 2


@pytest.mark.parametrize(("wave", "body", "fields"), [
    ("w", {"opens_at": 1, "closes_at": 2}, {"prequeue_from": "required"}),
    ("w", {**future(), "opens_at": True}, {"opens_at": "wrong_type"}),
    ("w", {**future(), "opens_at": [1]}, {"opens_at": "wrong_type"}),
    ("w", {**future(), "opens_at": 1.5}, {"opens_at": "wrong_type"}),
    ("w", {**future(), "opens_at": "tomorrow"}, {"opens_at": "invalid_format"}),
    ("w", {**future(), "opens_at": "2099-12-07T03:00:00"}, {"opens_at": "invalid_format"}),
    ("w", {**future(), "opens_at": -1}, {"opens_at": "out_of_range"}),
    ("w", {**future(), "opens_at": 10**12}, {"opens_at": "out_of_range"}),
    ("w", {**future(), "prequeue_from": future()["opens_at"] + 1},
     {"prequeue_from": "out_of_order"}),
    ("w", {**future(), "closes_at": future()["opens_at"]}, {"closes_at": "out_of_order"}),
    ("w", {"prequeue_from": 10, "opens_at": 20, "closes_at": 30}, {"closes_at": "in_the_past"}),
    ("w", {**future(), "seed": "mine"}, {"_unknown": "unknown_field"}),
    ("w", [1, 2], {"body": "wrong_type"}),
    ("Not_A_Name", future(), {"wave": "invalid_format"}),
    ("standing", future(), {"wave": "reserved"}),
])
async def test_a_bad_schedule_is_422_with_field_codes_and_audited(
        door_under_test: DoorUnderTest, redis_client: RedisClient, wave: str, body: Any,
        fields: dict[str, str]) -> None:
    status, answer = await put(door_under_test, wave, body)
    assert (status, answer["error"]["code"]) == (422, "validation_failed")
    assert answer["error"]["fields"] == fields
    assert await redis_client.exists(WAVES) == 0
    [(action, details)] = await actions(redis_client)
    assert action == "waves.schedule.refused"
    assert details["fields"] == fields and details["status"] == 422
    # Never what was sent: the unknown key's name is not in the trail.
    assert "seed" not in orjson.dumps(details).decode()


async def test_media_type_and_json_are_checked(door_under_test: DoorUnderTest,
                                               redis_client: RedisClient) -> None:
    status, body = await put(door_under_test, "w", future(), content_type="text/plain")
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")
    status, body = await put(door_under_test, "w", None, raw=b"{nope")
    assert (status, body["error"]["code"]) == (400, "malformed_json")
    assert [a for a, _ in await actions(redis_client)] == ["waves.schedule.refused"] * 2


async def test_a_started_wave_is_409_and_an_open_one_cannot_be_cancelled(
        door_under_test: DoorUnderTest, redis_client: RedisClient) -> None:
    now = int(time.time())
    started = {"prequeue_from": now - 10, "opens_at": now + 3600, "closes_at": now + 7200}
    assert (await put(door_under_test, "w", started))[0] == 200
    status, body = await put(door_under_test, "w", {**started, "opens_at": now + 1800})
    assert (status, body["error"]["code"]) == (409, "wave_started")
    # The same schedule again is no change: a repeated PUT answers as the first did.
    assert (await put(door_under_test, "w", started))[0] == 200
    await schedule_wave(redis_client, WaveSchedule("open", now - 20, now - 10, now + 60),
                        actor="t", source="s", now=now - 30)
    status, body = await delete(door_under_test, "open")
    assert (status, body["error"]["code"]) == (409, "wave_open")
    status, body = await delete(door_under_test, "never")
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert {w.wave for w in await read_waves(redis_client)} == {"w", "open"}
    refused = [(a, d["code"]) for a, d in await actions(redis_client) if a.endswith("refused")]
    assert refused == [("waves.schedule.refused", "wave_started"),
                       ("waves.cancel.refused", "wave_open"),
                       ("waves.cancel.refused", "not_found")]


async def test_a_wave_in_its_prequeue_is_cancelled_with_its_line(
        door_under_test: DoorUnderTest, redis_client: RedisClient) -> None:
    now = int(time.time())
    times = {"prequeue_from": now - 10, "opens_at": now + 3600, "closes_at": now + 7200}
    assert (await put(door_under_test, "w", times))[0] == 200
    await redis_client.zadd(WaveKeys("w").draw, {b"x" * 32: 0})
    status, body = await delete(door_under_test, "w")
    assert (status, body["cancelled"], body["wave"]) == (200, True, "w")
    assert await redis_client.exists(*WaveKeys("w").all()) == 0
    assert (await listing(door_under_test))["waves"] == []
    assert [a for a, _ in await actions(redis_client) if not a.endswith(".read")] == [
        "waves.schedule", "waves.cancel"]


async def test_the_listing_shows_the_line_in_force(door_under_test: DoorUnderTest,
                                                   redis_client: RedisClient) -> None:
    now = int(time.time())
    await schedule_wave(redis_client, WaveSchedule("w", now - 100, now - 50, now + 3600),
                        actor="t", source="s", now=now - 200)
    keys = WaveKeys("w")
    await redis_client.zadd(keys.draw, {bytes([n]) * 32: 0 for n in range(4)})
    await redis_client.hset(keys.state, mapping={"drawn": 4, "tail": 3004, "served": 1000,
                                                 "expired": 7, "used": 900})
    await redis_client.zadd(keys.gone, {b"5": 5, b"2000": 2000})
    line = (await listing(door_under_test))["in_force"]
    rate = door_under_test.door.live.policy.rate_per_second
    assert line["wave"] == "w" and line["phase"] == "open"
    assert (line["waiting"], line["served"], line["tail"], line["drawn"]) == (2003, 1000, 3004, 4)
    assert (line["expired"], line["used"], line["prequeue"]) == (7, 900, 4)
    assert line["release_rate"] == rate
    assert line["eta_last_seconds"] == -(-2003 // rate)


async def test_configured_waves_are_scheduled_when_the_door_starts(
        test_settings: Settings, redis_client: RedisClient) -> None:
    now = int(time.time())
    waiting_room = test_settings.waiting_room.model_copy(update={
        "release_rate": 25.0,
        "waves": [WaveConfig(wave="cfg", prequeue_from=now + 60, opens_at=now + 120,
                             closes_at=now + 600)]})
    settings = test_settings.model_copy(update={"waiting_room": waiting_room})
    async with running_door(settings) as door:
        listed = await listing(door)
    assert [w["wave"] for w in listed["waves"]] == ["cfg"]
    assert listed["in_force"]["release_rate"] == 25.0
    [(_, fields), *_] = await stream_range(redis_client, AUDIT_STREAM)
    assert (fields[b"action"], fields[b"actor"]) == (b"waves.schedule", b"config")


def test_the_checks_name_every_problem_at_once() -> None:
    from intake.waves_admin import _Refused

    with pytest.raises(_Refused) as refused:
        checked_schedule("w", {"prequeue_from": "x", "opens_at": False, "a": 1, "b": 2})
    assert refused.value.fields == {"prequeue_from": "invalid_format", "opens_at": "wrong_type",
                                    "closes_at": "required", "_unknown": "unknown_field"}
    assert refused.value.unknown == 2
