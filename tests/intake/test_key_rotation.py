"""Key rotation without downtime: on SIGHUP every door process seals with the new active
key while it goes on answering; data sealed with the old key stays readable; emailed
links signed with a new token key verify, and links signed with the old one still do."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from queueing.envelope import open_address
from queueing.sealing import Sealer
from queueing.tokens import TokenSigner
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
        await log_count(doors, "keys not reloaded", 2)
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


def with_token_keys(settings: Settings, active: str, keys: dict[str, str]) -> Settings:
    return settings.model_copy(update={"keys": settings.keys.model_copy(
        update={"active_token_key_id": active, "token_keys": keys})})


async def link_status(url: str, token: str) -> int:
    """What the door answers for an emailed link, on a fresh connection."""
    async with aiohttp.ClientSession() as session, session.get(
            f"{url}/v1/verify-email", params={"token": token},
            headers={"Accept": "application/json"}) as response:
        return response.status


async def test_sighup_puts_a_new_token_key_in_force_and_old_links_stay_valid(
    test_settings: Settings, redis_client: Redis, tmp_path: Path,
) -> None:
    old_id = test_settings.keys.active_token_key_id
    old_keys = dict(test_settings.keys.token_keys)
    new_key = os.urandom(32)
    both = {**old_keys, "t-new": base64.b64encode(new_key).decode()}
    # Expired links: a good signature answers 410 before PostgreSQL is asked, an
    # unknown key or a bad signature 400, so the answer says which keys are in force.
    past, rid = int(time.time()) - 1, uuid.uuid4()
    old_link = TokenSigner(test_settings.keys.token_key_bytes(), old_id).issue(rid, past)
    new_link = TokenSigner({"t-new": new_key}, "t-new").issue(rid, past)
    with door_processes(test_settings, tmp_path, processes=2) as doors:
        assert (await link_status(doors.url, old_link), await link_status(doors.url, new_link)
                ) == (410, 400)
        # Bad edits first: the new token key is the hash key; every token key removed.
        same = {**old_keys, "t-new": test_settings.keys.hash_key}
        rewrite_config(doors, tmp_path, with_token_keys(test_settings, "t-new", same))
        doors.process.send_signal(signal.SIGHUP)
        await log_count(doors, "are the same key", 2)
        rewrite_config(doors, tmp_path, with_token_keys(test_settings, "", {}))
        doors.process.send_signal(signal.SIGHUP)
        await log_count(doors, "keys.token_keys: cannot be emptied while running", 2)
        assert await link_status(doors.url, new_link) == 400  # the old keys stayed
        rewrite_config(doors, tmp_path, with_token_keys(test_settings, "t-new", both))
        doors.process.send_signal(signal.SIGHUP)
        await log_count(doors, f"links checked with token key ids 't-new', {old_id!r}", 2)
        # Fresh connections, spread over both processes: each link verifies.
        for _ in range(6):
            assert await link_status(doors.url, new_link) == 410
            assert await link_status(doors.url, old_link) == 410
        assert doors.process.poll() is None
    assert "Traceback" not in doors.log_text()


def with_address_keys(settings: Settings, active: str, keys: dict[str, str]) -> Settings:
    return settings.model_copy(update={"keys": settings.keys.model_copy(
        update={"active_address_key_id": active, "address_keys": keys})})


async def test_sighup_puts_a_new_address_key_in_force(
    test_settings: Settings, redis_client: Redis, tmp_path: Path,
) -> None:
    settings = with_admission(test_settings, rate_per_second=100_000.0, burst=100_000)
    both = {**settings.keys.address_keys, "a2": NEW_KEY}
    with door_processes(settings, tmp_path, processes=2) as doors:
        before = await run_load(doors.url, concurrency=2, duration=0.5, fresh_connections=True)
        # The active address id must name a listed key: refused, the old key stays.
        rewrite_config(doors, tmp_path, with_address_keys(settings, "missing", both))
        doors.process.send_signal(signal.SIGHUP)
        await log_count(doors, "keys not reloaded", 2)
        rewrite_config(doors, tmp_path, with_address_keys(settings, "a2", both))
        doors.process.send_signal(signal.SIGHUP)
        await log_count(doors, "addresses with key id 'a2'", 2)
        after = await run_load(doors.url, concurrency=2, duration=0.5, fresh_connections=True)
    assert set(before.statuses) == set(after.statuses) == {202}
    envelopes = await queued_envelopes(redis_client, settings.queue.partitions)
    by_id = {str(envelope.registration_uuid): envelope for envelope in envelopes}
    assert {by_id[rid].address_key_id for rid in before.accepted_ids} == {"a1"}
    assert {by_id[rid].address_key_id for rid in after.accepted_ids} == {"a2"}
    # Every address opens with the rotated address keys, and the full blobs with
    # the sealing key, which did not change.
    addresses = Sealer({**settings.keys.address_key_bytes(), "a2": base64.b64decode(NEW_KEY)},
                       "a2")
    sealer = Sealer(settings.keys.sealing_key_bytes(), settings.keys.active_sealing_key_id)
    same = 0
    for envelope in envelopes:
        assert envelope.address_key_id is not None and envelope.sealed_address is not None
        address = open_address(addresses, envelope.registration_id, envelope.address_key_id,
                               envelope.sealed_address)
        same += address == envelope.open(sealer).email
    assert same == len(envelopes)
