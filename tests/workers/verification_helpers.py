"""Running the verification side in tests: mail sink, email worker, waiting on states."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from config.settings import Settings
from gelombang.processes import free_port
from queueing.keys import partitions
from tests.support import eventually as eventually
from tests.support import stream_range
from workers.runtime.consumer import PartitionConsumer
from workers.sandbox.mail_sink import MaildirHandler, start_mail_sink
from workers.sandbox.nik_sim import build_app
from workers.verification.email import EmailVerifier
from workers.verification.nik import NikVerifier
from workers.verification.roles import RunningRole, consume, running_role

# Retries in tenths of seconds, reclaim after a second.
FAST_EMAIL: dict[str, Any] = {
    "retry_base_seconds": 0.05, "retry_max_seconds": 0.2, "claim_idle_seconds": 1.0,
    "max_attempts": 4, "rate_per_second": 1000.0,
}


def email_settings(settings: Settings, smtp_port: int, **changes: Any) -> Settings:
    """The settings with the fast email figures, sending to a sink on this port."""
    return settings.model_copy(update={"email": settings.email.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp_port, **FAST_EMAIL, **changes})})


@contextlib.asynccontextmanager
async def mail_sink(maildir: Path, port: int = 0, reject: Iterable[str] = (),
                    defer: Iterable[str] = ()) -> AsyncIterator[tuple[MaildirHandler, int]]:
    """A real SMTP sink in this process; yields its handler and port."""
    handler = MaildirHandler(maildir, reject, defer)
    server = await start_mail_sink("127.0.0.1", port, handler)
    try:
        yield handler, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)


@dataclass
class EmailWorkerUnderTest:
    verifier: EmailVerifier
    consumer: PartitionConsumer


@contextlib.asynccontextmanager
async def running_verifier(settings: Settings, role: str) -> AsyncIterator[RunningRole]:
    """A verification worker of `role` in this process until the block ends (then stopped)."""
    async with running_role(settings, role) as running:
        task = asyncio.create_task(consume(running))
        try:
            yield running
        finally:
            running.consumer.stopping.set()
            await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def running_email_worker(settings: Settings) -> AsyncIterator[EmailWorkerUnderTest]:
    """An email worker in this process until the block ends (then stopped gracefully)."""
    async with running_verifier(settings, "email") as running:
        assert isinstance(running.verifier, EmailVerifier)
        yield EmailWorkerUnderTest(running.verifier, running.consumer)


@dataclass(frozen=True)
class ReceivedMail:
    """One message the sink wrote, as the test reads it."""

    recipient: str
    registration_id: uuid.UUID
    text: str
    html: str

    def __repr__(self) -> str:
        return f"ReceivedMail({self.registration_id}, <address and body redacted>)"

    @property
    def token(self) -> str:
        """The token of the verification link in the text part."""
        for word in self.text.split():
            if "/v1/verify-email?" in word:
                query = urllib.parse.urlsplit(word).query
                return urllib.parse.parse_qs(query)["token"][0]
        raise AssertionError("no verification link in the message")


def received_mail(maildir: Path) -> list[ReceivedMail]:
    """Every .eml file in the folder, parsed."""
    mails = []
    for path in sorted(maildir.glob("*.eml")):
        message: Any = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",)).get_content()
        html = message.get_body(preferencelist=("html",)).get_content()
        mails.append(ReceivedMail(str(message["To"]),
                                  uuid.UUID(str(message["X-Gelombang-Registration"])),
                                  text, html))
    return mails


async def states(pg: asyncpg.Connection, column: str) -> dict[uuid.UUID, str]:
    """registration id → that verification column's value."""
    assert column in ("email_verification", "nik_verification")
    rows = await pg.fetch(f"SELECT registration_id, {column}::text FROM registrations")
    return {row[0]: row[1] for row in rows}


async def dead_jobs(redis: Redis, settings: Settings) -> list[dict[bytes, bytes]]:
    """The dead-letter entries of every partition."""
    entries = []
    for partition in partitions(settings.queue.partitions):
        entries += [fields for _, fields in await stream_range(redis, partition.dead_letters)]
    return entries


# NIK checks in tests: retries in tenths of seconds, a breaker that reopens fast.
# The timeout is generous: the simulator shares the test's event loop, and on a
# loaded 2-core CI a call that outlasted a short timeout was (rightly) asked again.
FAST_NIK: dict[str, Any] = {
    "retry_base_seconds": 0.05, "retry_max_seconds": 0.2, "claim_idle_seconds": 1.0,
    "breaker_failures": 3, "breaker_open_seconds": 0.5, "rate_per_second": 1000.0,
    "burst": 100, "concurrency": 4, "timeout_seconds": 10.0, "password": "sim-secret",
}
# A quick simulator: latency of a few milliseconds, no errors, room to spare.
FAST_SIM: dict[str, Any] = {"latency_ms_median": 2.0, "latency_ms_p99": 10.0,
                            "error_rate": 0.0, "capacity_per_second": 1000.0}


def nik_settings(settings: Settings, sim_url: str, **changes: Any) -> Settings:
    """The settings with fast NIK figures, calling the simulator at this URL."""
    return settings.model_copy(update={
        "nik": settings.nik.model_copy(update={"base_url": sim_url, **FAST_NIK, **changes}),
        "nik_sim": settings.nik_sim.model_copy(update=FAST_SIM)})


@dataclass
class SimulatorUnderTest:
    """The ministry API simulator served from this process."""

    url: str
    session: aiohttp.ClientSession

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(f"{self.url}/admin/stats") as reply:
            result: dict[str, Any] = await reply.json()
            return result

    async def outage(self, on: bool) -> None:
        async with self.session.put(f"{self.url}/admin/outage", json={"on": on}) as reply:
            assert reply.status == 200

    async def configure(self, **figures: float) -> None:
        async with self.session.put(f"{self.url}/admin/settings", json=figures) as reply:
            assert reply.status == 200


@contextlib.asynccontextmanager
async def nik_simulator(settings: Settings) -> AsyncIterator[SimulatorUnderTest]:
    """`gelombang nik-sim`'s application on a free loopback port of this process."""
    app = build_app(settings.nik_sim.model_copy(update=FAST_SIM), settings.nik.username,
                    FAST_NIK["password"])
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            yield SimulatorUnderTest(f"http://127.0.0.1:{port}", session)
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_nik_worker(settings: Settings) -> AsyncIterator[NikVerifier]:
    """A NIK worker in this process until the block ends (then stopped gracefully)."""
    async with running_verifier(settings, "nik") as running:
        assert isinstance(running.verifier, NikVerifier)
        yield running.verifier
