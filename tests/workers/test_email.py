"""Email verification end to end: real SMTP sink, real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from gelombang.processes import free_port
from intake.responses import MESSAGES
from loadtest.registrants import Registrant, RegistrantFactory
from queueing.keys import Partition
from queueing.tokens import TokenSigner
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.door_helpers import DoorUnderTest
from tests.workers.drain_helpers import drain_settings, running_drain
from tests.workers.verification_backlog import stored_backlog
from tests.workers.verification_helpers import (
    dead_jobs,
    email_settings,
    eventually,
    mail_sink,
    received_mail,
    running_email_worker,
    states,
)
from workers.drain.handoff import JOB_FIELD

AUTH = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
JSON = {"Accept": "application/json"}


async def register(door: DoorUnderTest, people: list[Registrant]) -> list[uuid.UUID]:
    ids = []
    for person in people:
        async with door.public.post("/v1/registrations", json=person.body()) as reply:
            assert reply.status == 202
            ids.append(uuid.UUID((await reply.json())["registration_id"]))
    return ids


async def verify(door: DoorUnderTest, token: str, accept: str | None = "application/json"
                 ) -> tuple[int, str, Any]:
    headers = {"Accept": accept} if accept else {}
    async with door.public.get("/v1/verify-email", params={"token": token},
                               headers=headers) as reply:
        body = await reply.read()
        if reply.content_type == "application/json":
            return reply.status, reply.content_type, await reply.json()
        return reply.status, reply.content_type, body.decode()


async def funnel(door: DoorUnderTest) -> dict[str, Any]:
    async with door.admin.get("/admin/v1/funnel", headers=AUTH) as reply:
        assert reply.status == 200
        result: dict[str, Any] = await reply.json()
        return result


async def test_register_then_the_emailed_link_verifies(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        registrants: RegistrantFactory, tmp_path: Path) -> None:
    people = [registrants.make() for _ in range(5)]
    ids = await register(door_under_test, people)
    async with mail_sink(tmp_path) as (_, port):
        settings = email_settings(drain_settings(test_settings), port)
        async with running_drain(settings), running_email_worker(settings):
            await eventually(lambda: _count_files(tmp_path, 5), what="five emails")

    mails = {mail.registration_id: mail for mail in received_mail(tmp_path)}
    assert set(mails) == set(ids)
    for person, rid in zip(people, ids, strict=True):
        assert mails[rid].recipient == person.email  # to the registrant's own address
        assert "Verifikasi" in mails[rid].html and "/v1/verify-email?token=" in mails[rid].text
    assert set((await states(pg, "email_verification")).values()) == {"sent"}

    first = ids[0]
    status, kind, body = await verify(door_under_test, mails[first].token)
    assert (status, kind, body) == (200, "application/json", {"email_verification": "verified"})
    # A repeated click is the same success, and counts once.
    assert (await verify(door_under_test, mails[first].token))[0] == 200
    status, kind, page = await verify(door_under_test, mails[ids[1]].token,
                                      accept="text/html,application/xhtml+xml,*/*;q=0.8")
    assert (status, kind) == (200, "text/html") and "berhasil diverifikasi" in page

    async with door_under_test.public.get(f"/v1/registrations/{first}") as reply:
        assert (await reply.json())["email_verification"] == "verified"
    counts = await funnel(door_under_test)
    assert (counts["email_sent"], counts["email_verified"]) == (5, 2)
    table = await states(pg, "email_verification")
    assert sorted(table.values()).count("verified") == 2
    assert sorted(table.values()).count("sent") == 3


async def test_expired_tampered_and_unknown_tokens(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        registrants: RegistrantFactory, tmp_path: Path) -> None:
    [rid] = await register(door_under_test, [registrants.make()])
    async with mail_sink(tmp_path) as (_, port):
        settings = email_settings(drain_settings(test_settings), port)
        async with running_drain(settings), running_email_worker(settings):
            await eventually(lambda: _count_files(tmp_path, 1), what="the email")
    keys = test_settings.keys
    signer = TokenSigner(keys.token_key_bytes(), keys.active_token_key_id)

    expired = signer.issue(rid, int(time.time()) - 1)
    assert (await verify(door_under_test, expired))[:3] == (
        410, "application/json", _error("token_expired"))
    status, kind, page = await verify(door_under_test, expired, accept=None)
    assert (status, kind) == (410, "text/html") and "kedaluwarsa" in page

    good = received_mail(tmp_path)[0].token
    tampered = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    for token in (tampered, "", "not-a-token", good + "x"):
        assert (await verify(door_under_test, token))[:3] == (
            400, "application/json", _error("invalid_token"))
    other_key = TokenSigner({keys.active_token_key_id: b"k" * 32},
                            keys.active_token_key_id).issue(rid, int(time.time()) + 60)
    assert (await verify(door_under_test, other_key))[0] == 400
    # Correctly signed, but no email was ever sent for this registration.
    assert (await verify(door_under_test, signer.issue(uuid.uuid4(), int(time.time()) + 60))
            )[0] == 400
    assert (await states(pg, "email_verification"))[rid] == "sent"  # nothing changed it


async def test_a_permanent_refusal_marks_the_email_failed(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        registrants: RegistrantFactory, tmp_path: Path) -> None:
    person = dataclasses.replace(registrants.make(), email=f"u{uuid.uuid4().hex}@bounce.example")
    [rid] = await register(door_under_test, [person])
    async with mail_sink(tmp_path, reject=["bounce.example"]) as (_, port):
        settings = email_settings(drain_settings(test_settings), port)
        async with running_drain(settings), running_email_worker(settings):
            await eventually(lambda: _state_is(pg, rid, "failed"), what="failed")
    row = await pg.fetchrow(
        "SELECT attempts, last_error FROM email_deliveries WHERE registration_id = $1", rid)
    assert row is not None
    attempts, error = row
    assert attempts == 1  # a 5xx is not retried
    assert "550" in error and "bounce" not in error  # the code, never the address
    assert not received_mail(tmp_path)


async def test_temporary_refusals_are_retried_then_dead_lettered(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        redis_client: Redis, registrants: RegistrantFactory, tmp_path: Path) -> None:
    person = dataclasses.replace(registrants.make(), email=f"u{uuid.uuid4().hex}@later.example")
    [rid] = await register(door_under_test, [person])
    async with mail_sink(tmp_path, defer=["later.example"]) as (_, port):
        settings = email_settings(drain_settings(test_settings), port, max_attempts=3)
        async with running_drain(settings), running_email_worker(settings):
            await eventually(lambda: _state_is(pg, rid, "failed"), what="failed")
            await eventually(lambda: _has_dead_job(redis_client, settings), what="dead letter")
    assert await pg.fetchval(
        "SELECT attempts FROM email_deliveries WHERE registration_id = $1", rid) == 3
    [dead] = await dead_jobs(redis_client, test_settings)
    assert dead[b"r"] == rid.bytes and b"3 tries" in dead[b"reason"]


async def test_mail_waits_for_a_stopped_sink_and_goes_out_when_it_is_back(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        registrants: RegistrantFactory, tmp_path: Path) -> None:
    port = free_port()
    # Two tries at most: a relay that is away costs the message none of them.
    settings = email_settings(drain_settings(test_settings), port, max_attempts=2)
    [rid] = await register(door_under_test, [registrants.make()])
    async with running_drain(settings), running_email_worker(settings) as worker:
        await eventually(lambda: _true(worker.consumer.leases.held != set()), what="leased")
        await asyncio.sleep(2.0)  # tries every 0.05-0.2 s meanwhile
        assert await _state_is(pg, rid, "pending")
        assert await pg.fetchval(
            "SELECT attempts FROM email_deliveries WHERE registration_id = $1", rid) is None
        async with mail_sink(tmp_path, port=port):
            await eventually(lambda: _state_is(pg, rid, "sent"), what="sent")
    [mail] = received_mail(tmp_path)
    assert mail.registration_id == rid
    # Sent at its first counted try: nothing to remember of it.
    assert await pg.fetchval(
        "SELECT count(*) FROM email_deliveries WHERE registration_id = $1", rid) == 0


async def test_a_repeated_job_sends_nothing_more(
        door_under_test: DoorUnderTest, test_settings: Settings, pg: asyncpg.Connection,
        redis_client: Redis, registrants: RegistrantFactory, tmp_path: Path) -> None:
    [rid] = await register(door_under_test, [registrants.make()])
    async with mail_sink(tmp_path) as (handler, port):
        settings = email_settings(drain_settings(test_settings), port)
        async with running_drain(settings), running_email_worker(settings) as worker:
            await eventually(lambda: _state_is(pg, rid, "sent"), what="sent")
            handled = worker.verifier.counts["jobs"]
            # The same job again, as a second hand-off or a redelivery would bring it.
            await redis_client.xadd(Partition(0).verification("email"), {JOB_FIELD: rid.bytes})
            await eventually(lambda: _true(worker.verifier.counts["jobs"] > handled),
                             what="handled")
        assert handler.received == 1
    assert (await funnel(door_under_test))["email_sent"] == 1


async def test_a_worker_stopped_mid_batch_records_every_message_it_sent(
        test_settings: Settings, pg: asyncpg.Connection, redis_client: Redis,
        registrants: RegistrantFactory, tmp_path: Path) -> None:
    await stored_backlog(pg, redis_client, test_settings, registrants, 400)
    async with mail_sink(tmp_path) as (handler, port):
        # Batches of 100 go out in groups of 10 as the bucket (40/s) allows: a
        # stop comes between two groups of a batch.
        settings = email_settings(test_settings, port, rate_per_second=40.0, concurrency=1)
        async with running_email_worker(settings):
            await eventually(lambda: _true(handler.received >= 55), what="mid-batch")
    mailed = {mail.registration_id for mail in received_mail(tmp_path)}
    recorded = {rid for rid, state in (await states(pg, "email_verification")).items()
                if state == "sent"}
    assert 0 < len(mailed) < 400
    assert recorded == mailed  # none to be sent twice by the next worker


async def _true(value: bool) -> bool:
    return value


def _error(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": MESSAGES[code]}}


async def _count_files(folder: Path, count: int) -> bool:
    return len(await asyncio.to_thread(_mail_files, folder)) >= count


def _mail_files(folder: Path) -> list[Path]:
    return list(folder.glob("*.eml")) if folder.exists() else []


async def _state_is(pg: asyncpg.Connection, rid: uuid.UUID, state: str) -> bool:
    return (await states(pg, "email_verification")).get(rid) == state


async def _attempts_at_least(pg: asyncpg.Connection, rid: uuid.UUID, count: int) -> bool:
    attempts = await pg.fetchval(
        "SELECT attempts FROM email_deliveries WHERE registration_id = $1", rid)
    return attempts is not None and attempts >= count


async def _has_dead_job(redis: Redis, settings: Settings) -> bool:
    return bool(await dead_jobs(redis, settings))


async def test_the_mail_sink_stores_each_message_and_logs_no_address(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    address = f"u{uuid.uuid4().hex}@example.org"
    async with mail_sink(tmp_path) as (handler, port):
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@example.org", address, "x"
        message["X-Gelombang-Registration"] = str(uuid.uuid4())
        message.set_content("text /v1/verify-email?token=abc")
        message.add_alternative("<p>html</p>", subtype="html")
        await aiosmtplib.send(message, hostname="127.0.0.1", port=port)
    [mail] = received_mail(tmp_path)
    assert mail.recipient == address and mail.token == "abc"
    assert handler.received == 1
    logged = address in caplog.text
    assert not logged  # (a bare bool: a failure must not print the address either)
