"""The admin port: bearer token, live admission settings, audit, metrics."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from loadtest.registrants import RegistrantFactory
from queueing import breaker_reports
from queueing.keys import ADMISSION_SETTINGS, AUDIT_STREAM, BREAKER_REPORTS, Partition
from queueing.redis_client import RedisClient
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.door_helpers import DoorUnderTest
from tests.support import stream_range

# Each test runs on one Redis server and on a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.both_redis

AUTH = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
SETTINGS_URL = "/admin/v1/admission"


async def put(d: DoorUnderTest, body: Any, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else orjson.dumps(body)
    all_headers = {"Content-Type": "application/json", **AUTH, **(headers or {})}
    async with d.admin.put(SETTINGS_URL, data=data, headers=all_headers) as response:
        return response.status, orjson.loads(await response.read())


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic dGVzdA=="},
                                     {"Authorization": "Bearer "},
                                     {"Authorization": TEST_ADMIN_TOKEN}])
async def test_admin_routes_need_the_token(door_under_test: DoorUnderTest,
                                           headers: dict[str, str]) -> None:
    async with door_under_test.admin.get(SETTINGS_URL, headers=headers) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        body = await response.json()
        assert body["error"]["code"] == "unauthorized"
    async with door_under_test.admin.put(SETTINGS_URL, data=b"{}", headers=headers) as response:
        assert response.status == 401


async def test_settings_start_from_config(door_under_test: DoorUnderTest) -> None:
    configured = door_under_test.door.settings.admission
    async with door_under_test.admin.get(SETTINGS_URL, headers=AUTH) as response:
        assert response.status == 200
        assert await response.json() == {
            "rate_per_second": configured.rate_per_second, "burst": configured.burst,
            "backlog_high_water": configured.backlog_high_water,
            "enabled": configured.enabled, "open": configured.open,
        }


async def test_partial_update_answers_full_settings_and_is_audited(
    door_under_test: DoorUnderTest, redis_client: RedisClient,
) -> None:
    status, body = await put(door_under_test, {"rate_per_second": 250, "open": False})
    assert status == 200
    assert body["rate_per_second"] == 250.0
    assert body["open"] is False
    assert body["burst"] == door_under_test.door.settings.admission.burst
    async with door_under_test.admin.get(SETTINGS_URL, headers=AUTH) as response:
        assert await response.json() == body
    # The reads are audited too (tests/intake/test_admin_audit.py); here, the change.
    entries = [fields for _, fields in await stream_range(redis_client, AUDIT_STREAM)
               if fields[b"action"] == b"admission.update"]
    assert len(entries) == 1
    fields = entries[0]
    assert fields[b"action"] == b"admission.update"
    assert fields[b"actor"] == b"admin-token"
    assert fields[b"source"]  # the client's address
    assert orjson.loads(fields[b"changes"]) == {"rate_per_second": 250.0, "open": False}
    assert float(fields[b"at"]) > 0


async def test_update_applies_to_this_process_at_once(door_under_test: DoorUnderTest,
                                                       registrants: RegistrantFactory) -> None:
    await put(door_under_test, {"open": False})
    async with door_under_test.public.post(
        "/v1/registrations", data=orjson.dumps(registrants.make().body()),
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "intake_closed"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"rate_per_second": 0}, {"rate_per_second": "out_of_range"}),
        ({"rate_per_second": -1.5}, {"rate_per_second": "out_of_range"}),
        ({"rate_per_second": "10"}, {"rate_per_second": "wrong_type"}),
        ({"burst": 0}, {"burst": "out_of_range"}),
        ({"burst": 2.5}, {"burst": "wrong_type"}),
        ({"burst": True}, {"burst": "wrong_type"}),
        ({"backlog_high_water": 0}, {"backlog_high_water": "out_of_range"}),
        ({"enabled": 1}, {"enabled": "wrong_type"}),
        ({"open": "yes"}, {"open": "wrong_type"}),
        ({"colour": "red"}, {"colour": "unknown_field"}),
        ([], {"body": "wrong_type"}),
    ],
)
async def test_invalid_update_is_422_and_changes_nothing(
    door_under_test: DoorUnderTest, redis_client: RedisClient, body: Any, fields: dict[str, str],
) -> None:
    status, answer = await put(door_under_test, body)
    assert status == 422
    assert answer["error"]["code"] == "validation_failed"
    assert answer["error"]["fields"] == fields
    # Nothing changed: the one audit entry is the refusal (issue 17, item 15).
    entries = await stream_range(redis_client, AUDIT_STREAM)
    assert [entry[b"action"] for _, entry in entries] == [b"admission.update.refused"]
    assert await redis_client.exists(ADMISSION_SETTINGS) == 0


async def test_update_needs_json(door_under_test: DoorUnderTest) -> None:
    status, answer = await put(door_under_test, None, raw=b"{", headers={})
    assert status == 400
    assert answer["error"]["code"] == "malformed_json"
    status, answer = await put(door_under_test, None, raw=b"{}",
                               headers={"Content-Type": "text/plain"})
    assert status == 415
    assert answer["error"]["code"] == "unsupported_media_type"


async def test_metrics_need_no_token_and_name_the_series(door_under_test: DoorUnderTest,
                                                         registrants: RegistrantFactory) -> None:
    async with door_under_test.public.post(
        "/v1/registrations", data=orjson.dumps(registrants.make().body()),
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 202
    async with door_under_test.admin.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    for series in (
        'gelombang_http_request_duration_seconds_count{route="registrations.create",status="202"}',
        'gelombang_admission_decisions_total{outcome="admitted"}',
        "gelombang_admission_group_size_count",
        "gelombang_redis_round_trip_seconds_count",
        'gelombang_backlog_entries{partition="0"}',
        "gelombang_admission_rate_per_second",
    ):
        assert series in text, series


async def test_metrics_export_the_workers_fresh_breaker_reports(
        door_under_test: DoorUnderTest) -> None:
    redis = door_under_test.door.redis
    await breaker_reports.report(redis, "nik", "worker-a", "open")
    await breaker_reports.report(redis, "nik", "worker-b", "closed")
    # A worker that stopped reporting long ago (killed): not exported, and removed.
    stale_at = time.time() - 10 * breaker_reports.STALE_SECONDS
    await redis.hset(BREAKER_REPORTS, "nik:worker-gone", f"open {stale_at}")
    async with door_under_test.admin.get("/metrics") as response:
        text = await response.text()
    assert 'gelombang_breaker_open{service="nik",worker="worker-a"} 1.0' in text
    assert 'gelombang_breaker_open{service="nik",worker="worker-b"} 0.0' in text
    assert "worker-gone" not in text
    assert not await redis.hexists(BREAKER_REPORTS, "nik:worker-gone")


async def test_metrics_count_dead_letters_per_partition(door_under_test: DoorUnderTest) -> None:
    redis = door_under_test.door.redis
    for _ in range(2):
        await redis.xadd(Partition(3).dead_letters, {"reason": "test"})
    async with door_under_test.admin.get("/metrics") as response:
        text = await response.text()
    assert 'gelombang_dead_letters{partition="3"} 2.0' in text
    assert 'gelombang_dead_letters{partition="0"} 0.0' in text
