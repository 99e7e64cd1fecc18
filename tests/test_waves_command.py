"""`gelombang waves list|schedule|cancel` against a real door's admin port."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import orjson

from gelombang.cli import build_parser
from gelombang.waves_command import request_of
from queueing.keys import AUDIT_STREAM
from queueing.redis_client import RedisClient
from queueing.waves import WaveSchedule, read_waves
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.door_helpers import DoorUnderTest
from tests.support import stream_range


async def gelombang(*argv: str) -> tuple[int, Any, str]:
    """Run `gelombang <argv>` as its own process: exit status, stdout as JSON, stderr."""
    env = {**os.environ, "GELOMBANG_ADMIN__TOKEN": TEST_ADMIN_TOKEN}
    env.pop("GELOMBANG_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gelombang", *argv, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, orjson.loads(stdout) if stdout else None, stderr.decode()


def parsed(*argv: str) -> argparse.Namespace:
    return build_parser(["waves"]).parse_args(["waves", *argv])


def test_each_action_is_one_admin_call() -> None:
    assert request_of(parsed("list")) == ("GET", "/admin/v1/waves", None)
    assert request_of(parsed("cancel", "w/1")) == ("DELETE", "/admin/v1/waves/w%2F1", None)
    assert request_of(parsed("schedule", "w1", "--prequeue-from", "100", "--opens-at",
                             "2026-12-07T10:00:00+07:00", "--closes-at", " 300 ")) == (
        "PUT", "/admin/v1/waves/w1",
        {"prequeue_from": 100, "opens_at": "2026-12-07T10:00:00+07:00", "closes_at": 300})


async def test_schedule_list_and_cancel_through_the_admin_port(
        door_under_test: DoorUnderTest, redis_client: RedisClient) -> None:
    url = str(door_under_test.admin.make_url("")).rstrip("/")
    now = int(time.time())
    status, body, _ = await gelombang(
        "waves", "--url", url, "schedule", "gelombang-2", "--prequeue-from", str(now + 600),
        "--opens-at", str(now + 1200), "--closes-at", str(now + 1800))
    assert status == 0 and body["created"] is True
    assert await read_waves(redis_client) == [
        WaveSchedule("gelombang-2", now + 600, now + 1200, now + 1800)]
    status, body, _ = await gelombang("waves", "--url", url, "list")
    assert status == 0
    assert [w["wave"] for w in body["waves"]] == ["gelombang-2"]
    assert body["in_force"]["wave"] == "standing"
    # A refusal: exit status 1, the error on stderr.
    status, _, stderr = await gelombang(
        "waves", "--url", url, "schedule", "gelombang-2", "--prequeue-from", "soon",
        "--opens-at", "1", "--closes-at", "2")
    assert status == 1 and "validation_failed" in stderr
    status, body, _ = await gelombang("waves", "--url", url, "cancel", "gelombang-2")
    assert status == 0 and body["cancelled"] is True
    assert await read_waves(redis_client) == []
    actions = [fields[b"action"] for _, fields in await stream_range(redis_client, AUDIT_STREAM)]
    assert actions == [b"waves.schedule", b"waves.read", b"waves.schedule.refused",
                       b"waves.cancel"]


async def test_an_unreachable_admin_port_is_exit_status_1() -> None:
    status, _, stderr = await gelombang("waves", "--url", "http://127.0.0.1:9", "list")
    assert status == 1 and "unreachable" in stderr
