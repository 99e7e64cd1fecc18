"""POST /v1/registrations and the public port, status by status, per docs/api.md."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from queueing.redis_client import RedisClient
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.door_helpers import DoorUnderTest, running_door, with_admission
from tests.support import queued_envelopes

# Each test runs on one Redis server and on a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.both_redis

URL = "/v1/registrations"
JSON = {"Content-Type": "application/json"}


async def post(d: DoorUnderTest, body: Any, headers: dict[str, str] | None = None,
               raw: bytes | None = None) -> tuple[int, dict[str, Any], Any]:
    data = raw if raw is not None else orjson.dumps(body)
    async with d.public.post(URL, data=data, headers={**JSON, **(headers or {})}) as response:
        return response.status, dict(response.headers), orjson.loads(await response.read())


def assert_error(body: Any, code: str) -> None:
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# --- 202 -------------------------------------------------------------------


async def test_valid_registration_is_queued(door_under_test: DoorUnderTest,
                                            registrants: RegistrantFactory,
                                            redis_client: RedisClient,
                                            test_settings: Settings) -> None:
    person = registrants.make()
    status, headers, body = await post(door_under_test, person.body())
    assert status == 202
    rid = uuid.UUID(body["registration_id"])
    assert rid.version == 7
    assert body == {"registration_id": str(rid), "status": "queued",
                    "status_url": f"/v1/registrations/{rid}"}
    assert headers["Location"] == body["status_url"]
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    entries = await queued_envelopes(redis_client, test_settings.queue.partitions)
    assert [e.registration_uuid for e in entries] == [rid]
    opened = entries[0].open(door_under_test.door.sealer)
    assert opened.email == person.email.lower()
    assert opened.phone.startswith("+628")


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8",
                                          "Application/JSON", "application/json;charset=UTF-8"])
async def test_json_media_type_is_case_insensitive_with_parameters(
    door_under_test: DoorUnderTest, registrants: RegistrantFactory, content_type: str
) -> None:
    status, _, _ = await post(door_under_test, registrants.make().body(),
                              {"Content-Type": content_type})
    assert status == 202


# --- checks in order, each answered before admission ---------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonp", ""])
async def test_other_media_types_are_415(door_under_test: DoorUnderTest,
                                         registrants: RegistrantFactory,
                                         content_type: str) -> None:
    status, _, body = await post(door_under_test, registrants.make().body(),
                                 {"Content-Type": content_type})
    assert status == 415
    assert_error(body, "unsupported_media_type")


async def test_media_type_is_checked_before_size(door_under_test: DoorUnderTest) -> None:
    status, _, body = await post(door_under_test, None, {"Content-Type": "text/plain"},
                                 raw=b"x" * 10_000)
    assert status == 415
    assert_error(body, "unsupported_media_type")


async def test_body_over_4_kib_is_413(door_under_test: DoorUnderTest) -> None:
    status, _, body = await post(door_under_test, None, raw=b" " * 4097)
    assert status == 413
    assert_error(body, "payload_too_large")


async def test_body_of_exactly_4_kib_is_read(door_under_test: DoorUnderTest) -> None:
    status, _, body = await post(door_under_test, None, raw=b"{}" + b" " * 4094)
    assert status == 422
    assert_error(body, "validation_failed")


async def test_chunked_body_over_4_kib_is_413(door_under_test: DoorUnderTest) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    async with door_under_test.public.post(URL, data=chunks(), headers=JSON) as response:
        assert response.status == 413
        assert_error(orjson.loads(await response.read()), "payload_too_large")


async def test_size_is_checked_before_json(door_under_test: DoorUnderTest) -> None:
    status, _, _ = await post(door_under_test, None, raw=b"{not json" * 1000)
    assert status == 413


@pytest.mark.parametrize("raw", [b"", b"{", b"{'a': 1}", b"\xff\xfe", b"nul", b"[1,]"])
async def test_malformed_json_is_400(door_under_test: DoorUnderTest, raw: bytes) -> None:
    status, _, body = await post(door_under_test, None, raw=raw)
    assert status == 400
    assert_error(body, "malformed_json")


async def test_json_is_checked_before_idempotency_key(door_under_test: DoorUnderTest) -> None:
    status, _, body = await post(door_under_test, None, {"Idempotency-Key": "bad key!"},
                                 raw=b"{")
    assert status == 400
    assert_error(body, "malformed_json")


@pytest.mark.parametrize("key", ["", "x" * 65, "has space", "slash/", "ümlaut", "a.b"])
async def test_bad_idempotency_key_is_400(door_under_test: DoorUnderTest,
                                          registrants: RegistrantFactory, key: str) -> None:
    status, _, body = await post(door_under_test, registrants.make().body(),
                                 {"Idempotency-Key": key})
    assert status == 400
    assert_error(body, "invalid_idempotency_key")


async def test_idempotency_key_is_checked_before_fields(door_under_test: DoorUnderTest) -> None:
    status, _, body = await post(door_under_test, {"nik": 1}, {"Idempotency-Key": "bad key"})
    assert status == 400
    assert_error(body, "invalid_idempotency_key")


async def test_every_bad_field_is_reported(door_under_test: DoorUnderTest) -> None:
    status, _, body = await post(door_under_test, {
        "nik": "123", "full_name": "", "email": "no-at-sign", "phone": "12345",
        "birth_date": "1990-02-30", "consent": False, "extra": 1,
    })
    assert status == 422
    assert_error(body, "validation_failed")
    assert body["error"]["fields"] == {
        "nik": "invalid_format", "full_name": "too_short", "email": "invalid_format",
        "phone": "invalid_format", "birth_date": "invalid_date", "consent": "must_be_true",
        "_unknown": "unknown_field",
    }
    assert body["error"]["unknown_fields"] == 1


async def test_missing_fields_are_required(door_under_test: DoorUnderTest) -> None:
    status, _, body = await post(door_under_test, {})
    assert status == 422
    assert set(body["error"]["fields"].values()) == {"required"}
    assert set(body["error"]["fields"]) == {"nik", "full_name", "email", "phone",
                                            "birth_date", "consent"}


@pytest.mark.parametrize("value", [[], "text", 3, None, True])
async def test_body_that_is_not_an_object_is_422_body(door_under_test: DoorUnderTest,
                                                      value: Any) -> None:
    status, _, body = await post(door_under_test, value)
    assert status == 422
    assert body["error"]["fields"] == {"body": "wrong_type"}


async def test_mismatched_birth_date_is_reported(door_under_test: DoorUnderTest,
                                                 registrants: RegistrantFactory) -> None:
    person = registrants.make().body()
    year = int(person["birth_date"][:4])
    person["birth_date"] = f"{year - 1}{person['birth_date'][4:]}"
    status, _, body = await post(door_under_test, person)
    assert status == 422
    assert body["error"]["fields"]["birth_date"] in {"birth_date_mismatch", "invalid_date"}


async def test_invalid_requests_never_touch_redis(door_under_test: DoorUnderTest,
                                                  redis_client: RedisClient) -> None:
    await post(door_under_test, {"nik": "1"})
    await post(door_under_test, None, raw=b"{")
    await post(door_under_test, None, {"Content-Type": "text/plain"}, raw=b"{}")
    # SCAN, not DBSIZE: on a cluster DBSIZE asks one node. The door's own counter
    # reports (every 2 s, whatever the requests) are not the requests' doing.
    assert [key async for key in redis_client.scan_iter()
            if not key.startswith(b"gelombang:doors:")] == []


# --- admission outcomes ----------------------------------------------------------


@pytest.fixture
def tight_settings(test_settings: Settings) -> Settings:
    return with_admission(test_settings, rate_per_second=0.001,
                          burst=test_settings.queue.partitions)


async def test_empty_bucket_is_429_with_retry_after_and_ratelimit_fields(
    tight_settings: Settings, redis_client: RedisClient, registrants: RegistrantFactory,
) -> None:
    async with running_door(tight_settings) as d:
        statuses = []
        limited: dict[str, Any] | None = None
        for _ in range(4 * tight_settings.queue.partitions):
            status, headers, body = await post(d, registrants.make().body())
            statuses.append(status)
            if status == 429:
                limited = {"headers": headers, "body": body}
        assert statuses.count(202) <= tight_settings.queue.partitions
        assert limited is not None
        assert_error(limited["body"], "admission_limited")
        headers = limited["headers"]
        assert int(headers["Retry-After"]) >= 1
        assert re.fullmatch(r'"admission";q=\d+;w=\d+', headers["RateLimit-Policy"])
        assert re.fullmatch(r'"admission";r=0;t=\d+', headers["RateLimit"])
        assert headers["RateLimit"].endswith(f"t={headers['Retry-After']}")


async def test_backlog_over_high_water_is_503(test_settings: Settings, redis_client: RedisClient,
                                              registrants: RegistrantFactory) -> None:
    settings = with_admission(test_settings, backlog_high_water=1)
    async with running_door(settings) as d:
        statuses = [(await post(d, registrants.make().body()))[:2] for _ in range(40)]
    full = [headers for status, headers in statuses if status == 503]
    assert full, "the backlog share of one entry per partition must fill"
    assert int(full[0]["Retry-After"]) >= 1


async def test_closed_intake_is_503_but_replays_answer(door_under_test: DoorUnderTest,
                                                       registrants: RegistrantFactory) -> None:
    first = await post(door_under_test, registrants.make().body(), {"Idempotency-Key": "k-1"})
    assert first[0] == 202
    await set_admission(door_under_test, {"open": False})
    status, headers, body = await post(door_under_test, registrants.make().body())
    assert status == 503
    assert_error(body, "intake_closed")
    assert int(headers["Retry-After"]) >= 1
    replay = await post(door_under_test, registrants.make().body(), {"Idempotency-Key": "k-1"})
    assert replay[0] == 202 and replay[2] == first[2]


async def test_unreachable_redis_is_503_within_a_second(test_settings: Settings,
                                                        registrants: RegistrantFactory) -> None:
    dead = test_settings.model_copy(update={"redis": test_settings.redis.model_copy(
        update={"url": "redis://127.0.0.1:1/0", "cluster_seeds": []})})
    async with running_door(dead) as d:
        started = time.monotonic()
        status, headers, body = await post(d, registrants.make().body())
        assert time.monotonic() - started < 1.0
        assert status == 503
        assert_error(body, "queue_unavailable")
        assert int(headers["Retry-After"]) >= 1
        async with d.public.get("/readyz") as response:
            assert response.status == 503


# --- idempotency -------------------------------------------------------------------


async def test_same_key_returns_first_body_and_stores_once(
    door_under_test: DoorUnderTest, registrants: RegistrantFactory, redis_client: RedisClient,
    test_settings: Settings,
) -> None:
    first = await post(door_under_test, registrants.make().body(), {"Idempotency-Key": "same"})
    second = await post(door_under_test, registrants.make().body(), {"Idempotency-Key": "same"})
    assert first[0] == second[0] == 202
    assert first[2] == second[2]
    assert second[1]["Location"] == first[1]["Location"]
    (queued,) = await queued_envelopes(redis_client, test_settings.queue.partitions)
    # The key is in its record only: the stream entry, held in memory, does not repeat it.
    assert queued.idempotency_key is None
    assert b"same" not in queued.encode()


async def test_concurrent_same_key_requests_share_one_id(
    door_under_test: DoorUnderTest, registrants: RegistrantFactory, redis_client: RedisClient,
    test_settings: Settings,
) -> None:
    results = await asyncio.gather(*(
        post(door_under_test, registrants.make().body(), {"Idempotency-Key": "race"})
        for _ in range(30)
    ))
    assert {r[0] for r in results} == {202}
    assert len({r[2]["registration_id"] for r in results}) == 1
    assert len(await queued_envelopes(redis_client, test_settings.queue.partitions)) == 1


# --- routing, health, description (the read side: test_read_side.py) ---


async def test_unknown_route_and_method_answer_in_contract_shape(
    door_under_test: DoorUnderTest,
) -> None:
    async with door_under_test.public.get("/nope") as response:
        assert response.status == 404
        assert_error(await response.json(), "not_found")
    async with door_under_test.public.delete(URL) as response:
        assert response.status == 405
        assert_error(await response.json(), "method_not_allowed")


async def test_health_ready_and_openapi(door_under_test: DoorUnderTest) -> None:
    async with door_under_test.public.get("/healthz") as response:
        assert response.status == 200
    async with door_under_test.public.get("/readyz") as response:
        assert response.status == 200
    async with door_under_test.public.get("/openapi.json") as response:
        assert response.status == 200
        assert (await response.json())["openapi"].startswith("3.1")
    door_under_test.door.draining = True
    async with door_under_test.public.get("/readyz") as response:
        assert response.status == 503


async def set_admission(d: DoorUnderTest, changes: dict[str, Any]) -> dict[str, Any]:
    async with d.admin.put("/admin/v1/admission", data=orjson.dumps(changes),
                           headers={**JSON, "Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}) as resp:
        assert resp.status == 200
        result: dict[str, Any] = await resp.json()
        return result
