"""Key rotation without downtime: on SIGHUP every door process seals with the new active
key while it goes on answering; data sealed with the old key stays readable."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from queueing.sealing import Sealer
from tests.intake.door_helpers import with_admission
from tests.support import DoorProcesses, door_processes, queued_envelopes, run_load, write_config

pytestmark = pytest.mark.slow
NEW_KEY = base64.b64encode(os.urandom(32)).decode()


def with_keys(settings: Settings, active: str, keys: dict[str, str]) -> Settings:
    return settings.model_copy(update={"keys": settings.keys.model_copy(
        update={"active_sealing_key_id": active, "sealing_keys": keys})})


def rewrite_config(doors: DoorProcesses, folder: Path, settings: Settings) -> None:
    """The doors' config file, as an operator edits it (same ports)."""
    public = urlsplit(doors.url).port
    admin = urlsplit(doors.admin_url).port
    assert public is not None and admin is not None
    write_config(settings, folder / "door.toml", public, admin)


async def log_count(doors: DoorProcesses, text: str, count: int, within: float = 20.0) -> None:
    """Until the doors' log has the line `count` times."""
    deadline = time.monotonic() + within
    while doors.log_text().count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged {count} times in time")
        await asyncio.sleep(0.05)


async def test_sighup_switches_the_active_key_while_the_doors_answer(
    test_settings: Settings, redis_client: Redis, tmp_path: Path,
) -> None:
    settings = with_admission(test_settings, rate_per_second=100_000.0, burst=100_000)
    old_keys = dict(settings.keys.sealing_keys)
    both = {**old_keys, "new": NEW_KEY}
    with door_processes(settings, tmp_path, processes=2) as doors:
        stop = asyncio.Event()
        during = asyncio.create_task(run_load(doors.url, concurrency=4, duration=60.0,
                                              stop=stop, fresh_connections=True))
        # A bad edit first (the active id names no key): refused, the old key stays.
        rewrite_config(doors, tmp_path, with_keys(settings, "missing", both))
        doors.process.send_signal(signal.SIGHUP)
        await log_count(doors, "sealing keys not reloaded", 2)
        rewrite_config(doors, tmp_path, with_keys(settings, "new", both))
        doors.process.send_signal(signal.SIGHUP)
        await log_count(doors, "sealing with key id 'new'", 2)
        stop.set()
        load = await during
        # Both processes now seal with the new key (fresh connections reach both).
        after = await run_load(doors.url, concurrency=4, duration=1.0, fresh_connections=True)
        assert doors.process.poll() is None
    # No downtime: every request across both reloads was answered 202.
    assert set(load.statuses) == {202} and load.connection_errors == 0
    assert set(after.statuses) == {202} and after.connection_errors == 0
    envelopes = await queued_envelopes(redis_client, settings.queue.partitions)
    by_id = {str(envelope.registration_uuid): envelope for envelope in envelopes}
    assert len(by_id) == load.statuses[202] + after.statuses[202]
    assert {by_id[rid].key_id for rid in after.accepted_ids} == {"new"}
    assert {envelope.key_id for envelope in envelopes} == {"test1", "new"}
    # Everything queued, under either key, opens with the rotated configuration.
    sealer = Sealer({**settings.keys.sealing_key_bytes(), "new": base64.b64decode(NEW_KEY)},
                    "new")
    for envelope in envelopes:
        envelope.open(sealer)
