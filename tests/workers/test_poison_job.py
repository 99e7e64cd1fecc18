"""A job that cannot be done goes to the dead letters; its partition goes on; a replay
after the fix completes it."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from tests.workers.test_dead_letters_command import cli
from tests.workers.verification_backlog import stored_backlog
from tests.workers.verification_helpers import (
    dead_jobs,
    email_settings,
    eventually,
    mail_sink,
    running_email_worker,
    states,
)


def with_old_key(settings: Settings, key: str) -> Settings:
    """The settings sealing addresses with a key "old" (as before a rotation): the
    email worker opens the address only, with the address keys."""
    keys = settings.keys.model_copy(update={
        "address_keys": {**settings.keys.address_keys, "old": key},
        "active_address_key_id": "old"})
    return settings.model_copy(update={"keys": keys})


async def test_a_job_sealed_under_an_unknown_key_is_dead_lettered_then_replayed(
        pg: asyncpg.Connection, redis_client: Redis, test_settings: Settings,
        registrants: RegistrantFactory, tmp_path: Path) -> None:
    old_key = base64.b64encode(os.urandom(32)).decode()
    [poisoned] = await stored_backlog(pg, redis_client, with_old_key(test_settings, old_key),
                                      registrants, 1)
    healthy = await stored_backlog(pg, redis_client, test_settings, registrants, 20)
    async with mail_sink(tmp_path / "mail") as (sink, port):
        # A worker that does not know the key "old" (say, after a bad reload).
        settings = email_settings(test_settings, port)
        async with running_email_worker(settings):
            await eventually(lambda: _dead_count(redis_client, settings, 1), what="dead letter")
            await eventually(lambda: _sent_count(pg, 20), what="the others sent")
        [dead] = await dead_jobs(redis_client, settings)
        assert dead[b"r"] == poisoned.registration_id
        assert b"sealed data cannot be opened" in dead[b"reason"]
        assert sink.received == len(healthy)

        # The fix: the key is configured again. The replay brings the job back.
        fixed = email_settings(with_old_key(test_settings, old_key), port)
        replay = await cli(fixed, tmp_path, "replay", "--kind", "email")
        assert replay.returncode == 0, replay.stderr
        async with running_email_worker(fixed):
            await eventually(lambda: _sent_count(pg, 21), what="the replayed one sent")
        assert sink.received == len(healthy) + 1
    assert not await dead_jobs(redis_client, settings)


async def _dead_count(redis: Redis, settings: Settings, count: int) -> bool:
    return len(await dead_jobs(redis, settings)) >= count


async def _sent_count(pg: asyncpg.Connection, count: int) -> bool:
    return list((await states(pg, "email_verification")).values()).count("sent") >= count
