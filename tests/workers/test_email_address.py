"""The email worker opens the separately sealed address and nothing else (issue 17 item 16):
real door, drain, Redis, PostgreSQL and SMTP sink."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from config.settings import ConfigError, Settings
from loadtest.registrants import Registrant, RegistrantFactory
from queueing.envelope import open_sealed
from queueing.errors import SealingError
from queueing.keys import role_heartbeats
from tests.intake.door_helpers import DoorUnderTest
from tests.support import REPO_ROOT, seal_people, write_config
from tests.workers.drain_helpers import drain_settings, enqueue, running_drain, wait_drained
from tests.workers.test_email import register
from tests.workers.verification_helpers import (
    dead_jobs,
    email_settings,
    eventually,
    mail_sink,
    received_mail,
    running_email_worker,
)
from workers.verification.email import NO_SEALED_ADDRESS


def address_only(settings: Settings) -> Settings:
    """The email role's keys as docs/security.md recommends: address and token keys only."""
    keys = settings.keys.model_copy(update={
        "active_sealing_key_id": "", "sealing_keys": {}, "hash_key": ""})
    return settings.model_copy(update={"keys": keys})


def older_door(settings: Settings) -> Settings:
    """A door from before the address keys: its envelopes are version 1."""
    keys = settings.keys.model_copy(update={"active_address_key_id": "", "address_keys": {}})
    return settings.model_copy(update={"keys": keys})


def mail_count(folder: Path) -> int:
    return len(list(folder.glob("*.eml"))) if folder.exists() else 0


async def mails_at_least(folder: Path, count: int) -> bool:
    return await asyncio.to_thread(mail_count, folder) >= count


def to_own_address(folder: Path, people: list[Registrant], ids: list[uuid.UUID]) -> int:
    """How many registrants got their message at their own address (a count: no address
    is ever printed)."""
    sent = {mail.registration_id: mail.recipient for mail in received_mail(folder)}
    return sum(sent.get(rid) == person.email for person, rid in zip(people, ids, strict=True))


async def test_an_email_worker_with_only_the_address_keys_sends_and_cannot_open_the_blob(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        registrants: RegistrantFactory, tmp_path: Path) -> None:
    people = [registrants.make() for _ in range(4)]
    ids = await register(door_under_test, people)
    stored = drain_settings(test_settings)
    async with mail_sink(tmp_path) as (_, port):
        settings = email_settings(address_only(stored), port)
        with pytest.raises(ConfigError, match=r"keys\.hash_key"):
            settings.keys.require()  # what the NIK role needs, this one lacks
        async with running_drain(stored), running_email_worker(settings) as worker:
            await eventually(lambda: mails_at_least(tmp_path, 4), what="four emails")
            assert worker.verifier.blobs is None  # no sealing key at all
            rows = await pg.fetch("SELECT registration_id, key_id, sealed FROM registrations")
            assert len(rows) == 4
            for row in rows:
                # Its only keys are the address keys: the full blob stays shut.
                with pytest.raises(SealingError):
                    open_sealed(worker.verifier.addresses, row[0].bytes, row[1], row[2])
    assert to_own_address(tmp_path, people, ids) == 4
    assert await pg.fetchval(
        "SELECT count(*) FROM registrations WHERE address_key_id = 'a1'"
        " AND sealed_address IS NOT NULL AND email_verification = 'sent'") == 4


async def test_an_older_doors_entries_are_stored_and_mailed_only_by_a_worker_with_sealing_keys(
        redis_client: Redis, test_settings: Settings, pg: asyncpg.Connection,
        registrants: RegistrantFactory, tmp_path: Path) -> None:
    stored = drain_settings(test_settings)
    older = older_door(stored)
    first = [registrants.make() for _ in range(2)]
    await enqueue(redis_client, older, seal_people(older, first))
    async with mail_sink(tmp_path) as (_, port):
        async with running_drain(stored):
            await wait_drained(redis_client, stored)
            async with running_email_worker(email_settings(address_only(stored), port)):
                await eventually(lambda: dead_count(redis_client, stored, 2),
                                 what="two dead letters")
        assert mail_count(tmp_path) == 0
        reasons = {dead[b"reason"].decode() for dead in await dead_jobs(redis_client, stored)}
        assert reasons == {NO_SEALED_ADDRESS}
        # Stored all the same, without a sealed address.
        assert await pg.fetchval(
            "SELECT count(*) FROM registrations WHERE sealed_address IS NULL") == 2

        # A worker configured with the sealing keys too falls back to the full blob.
        second = [registrants.make() for _ in range(2)]
        await enqueue(redis_client, older, seal_people(older, second))
        async with running_drain(stored), running_email_worker(email_settings(stored, port)):
            await eventually(lambda: mails_at_least(tmp_path, 2), what="two emails")
    assert mail_count(tmp_path) == 2
    assert len(await dead_jobs(redis_client, stored)) == 2
    assert await pg.fetchval(
        "SELECT count(*) FROM registrations WHERE email_verification = 'sent'") == 2


async def dead_count(redis: Redis, settings: Settings, count: int) -> bool:
    return len(await dead_jobs(redis, settings)) >= count


async def test_gelombang_worker_email_starts_with_only_the_address_and_token_keys(
        redis_client: Redis, test_settings: Settings, migrated_dsn: str,
        tmp_path: Path) -> None:
    config = tmp_path / "email.toml"
    write_config(address_only(test_settings), config, 0, 0)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gelombang", "worker", "email", cwd=REPO_ROOT,
        env={**os.environ, "GELOMBANG_CONFIG": str(config)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Its heartbeat: it got past the key checks and is consuming.
        await eventually(lambda: beating(redis_client), within=30, what="a heartbeat")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()[-500:]


async def beating(redis: Redis) -> bool:
    return bool(await redis.zcard(role_heartbeats("email")))
