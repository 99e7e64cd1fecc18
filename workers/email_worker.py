"""`gelombang worker email`: send each accepted registration its verification email.

A job names a registration. The worker reads the stored row, opens the
sealed email address in memory only, signs a token (queueing/tokens.py) and
sends the message over SMTP through reused sessions, within the
deployment-wide rate limit. Tries are counted in `email_deliveries` (so they
survive a restart): temporary failures (4xx, broken connections) are retried
with exponential back-off and jitter; a permanent refusal (5xx) marks the
email `failed`; so does running out of `email.max_attempts`, and that job
also goes to the dead-letter stream for ops. A sent email moves the
registration `pending → sent`; its link moves it to `verified` (the door).

A worker killed after the relay took a message and before the state change
committed sends it once more when the job is reclaimed: at least once, never
zero times, and the second message carries the same registration in its
Message-ID. Nothing else can send twice, since every send starts from
`pending` and the state change is guarded by it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from typing import Any

import asyncpg
import uvloop

from config.settings import Settings
from queueing.envelope import open_sealed
from queueing.redis_client import RedisClient
from queueing.sealing import Sealer
from queueing.tokens import TokenSigner
from workers.drain import connect_worker_redis, create_pool
from workers.email_message import VerificationEmails, verification_link
from workers.jobs import JobAbandoned, JobConsumer, JobDeferred, JobSettings, VerificationJob
from workers.rate_limit import SharedRateLimit
from workers.recording import record_after_the_fact
from workers.retry import backoff_seconds
from workers.smtp_pool import SmtpFailure, SmtpPool
from workers.verification_store import (
    count_email_attempt,
    job_subject,
    note_email_error,
    record_email_failed,
    record_email_sent,
)
from workers.worker_command import configure_logging

log = logging.getLogger("gelombang.email")


class EmailVerifier:
    """The handler of email jobs."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, smtp: SmtpPool,
                 limit: SharedRateLimit) -> None:
        self.settings = settings.email
        self.base_url = settings.public.base_url
        self.pool = pool
        self.smtp = smtp
        self.limit = limit
        self.sealer = Sealer(settings.keys.sealing_key_bytes(),
                             settings.keys.active_sealing_key_id)
        self.signer = TokenSigner(settings.keys.token_key_bytes())
        self.emails = VerificationEmails(settings.email.from_address)
        self.stopping = asyncio.Event()
        self.sent = 0

    async def __call__(self, job: VerificationJob) -> None:
        rid = job.registration_id
        async with self.pool.acquire() as connection:
            subject = await job_subject(connection, rid)
        if subject is None:
            raise JobAbandoned("registration not stored")
        if subject.state != "accepted" or subject.email_verification != "pending":
            return  # done before (a redelivered job), or never to be sent
        person = open_sealed(self.sealer, rid.bytes, subject.key_id, subject.sealed)
        expires_at = int(time.time() + self.settings.token_ttl_hours * 3600)
        link = verification_link(self.base_url, self.signer.issue(rid, expires_at))
        message = self.emails.make(person.email, rid, link, expires_at)
        while True:
            async with self.pool.acquire() as connection:
                attempt = await count_email_attempt(connection, rid)
            await self.limit.acquire()
            try:
                await self.smtp.send(message)
            except SmtpFailure as failure:
                if await self._failed(job, attempt, failure):
                    return
                continue
            await record_after_the_fact(self.pool, lambda c: record_email_sent(c, rid),
                                        self.stopping, "a sent email")
            self.sent += 1
            return

    async def _failed(self, job: VerificationJob, attempt: int, failure: SmtpFailure) -> bool:
        """Record a failed try; True when the job is finished, False to try again."""
        rid = job.registration_id
        if failure.permanent:
            async with self.pool.acquire() as connection:
                await record_email_failed(connection, rid, failure.summary)
            log.warning("email refused permanently (%s); marked failed", failure.summary)
            return True
        if attempt >= self.settings.max_attempts:
            async with self.pool.acquire() as connection:
                await record_email_failed(connection, rid, failure.summary)
            raise JobAbandoned(f"email not sent after {attempt} tries: {failure.summary}")
        async with self.pool.acquire() as connection:
            await note_email_error(connection, rid, failure.summary)
        delay = backoff_seconds(attempt, self.settings.retry_base_seconds,
                                self.settings.retry_max_seconds)
        log.info("email try %d failed (%s); next in %.1f s", attempt, failure.summary, delay)
        try:
            await asyncio.wait_for(self.stopping.wait(), delay)
        except TimeoutError:
            return False
        raise JobDeferred


def register_role(roles: Any) -> None:
    """Add `worker email`."""
    parser = roles.add_parser("email", help="send the verification emails")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="jobs in hand at once (default: email.concurrency)")
    parser.set_defaults(handler=run_email)


def run_email(args: argparse.Namespace) -> int:
    """Send until SIGTERM or SIGINT; messages in flight finish first."""
    overrides: dict[str, Any] = {}
    if args.concurrency is not None:
        overrides["email"] = {"concurrency": args.concurrency}
    settings = Settings.load(**overrides)
    settings.keys.require()
    configure_logging(settings)
    uvloop.run(serve_email(settings))
    return 0


def email_consumer(settings: Settings, redis: RedisClient, verifier: EmailVerifier) -> JobConsumer:
    """The job consumer that feeds this verifier."""
    job_settings = JobSettings(concurrency=settings.email.concurrency,
                               claim_idle_seconds=settings.email.claim_idle_seconds,
                               max_deliveries=max(3, settings.email.max_attempts))
    return JobConsumer(redis, "email", verifier, job_settings, settings.queue.partitions)


async def serve_email(settings: Settings) -> None:
    """Run one email worker until SIGTERM/SIGINT (or its `stopping` is set)."""
    redis = connect_worker_redis(settings)
    pool = await create_pool(settings, settings.email.concurrency + 1)
    smtp = SmtpPool(settings.email)
    limit = SharedRateLimit(redis, "smtp", settings.email.rate_per_second,
                            max(1, int(settings.email.rate_per_second)))
    verifier = EmailVerifier(settings, pool, smtp, limit)
    consumer = email_consumer(settings, redis, verifier)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        consumer.stopping.set()
        verifier.stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    log.info("email worker %s started", consumer.name)
    try:
        await consumer.run()
    finally:
        await smtp.close()
        await pool.close()
        await redis.aclose()
        log.info("email worker stopped after %d messages", verifier.sent)
