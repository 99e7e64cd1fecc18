"""Email verification: a batch of jobs becomes a batch of messages on reused SMTP sessions.

Per batch: one query loads the registrations (and their tries so far); the
sealed addresses are opened in memory only, with the address keys: this
worker never reads the full blob (NIK, name, phone, birth date) unless it is
configured with the sealing keys too, and then only for rows an older door
stored without a separate address (a second query, those rows only). Without
the sealing keys such a row's job is dead-lettered, to be replayed once
`gelombang keys reseal` has sealed its address (docs/security.md); each message is the prebuilt
template with its link filled in (workers/verification/email_message.py);
tokens of the deployment-wide bucket (`email.rate_per_second`) are
reserved for the whole batch in one script call; the messages go out over
`email.connections` sessions, pipelined (workers/verification/smtp.py); one
statement records every outcome; one script call acknowledges.

Outcomes: sent (`pending → sent`); 5xx for the message (`failed`, no retry);
4xx for the message (a try counted; again after back-off, `failed` and
dead-lettered after `email.max_attempts`); the relay away or a session
broken (nothing counted: the batch waits with back-off and goes on when the
relay is back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from asyncpg.pgproto.pgproto import UUID as WireUUID

from config.settings import Settings
from database.counters import counter_shard
from database.queries import Connection
from queueing.envelope import open_address, open_sealed
from queueing.errors import EnvelopeError, SealingError
from queueing.redis_client import RedisClient
from queueing.sealing import Sealer
from queueing.tokens import TokenSigner
from workers.metrics import WorkerMetrics
from workers.runtime.consumer import Batch, BatchStopped
from workers.runtime.retry import backoff_seconds
from workers.verification.email_message import VerificationEmails, verification_link
from workers.verification.jobs import DeadJob, Job, Verifier, decode_jobs
from workers.verification.rate_limit import SharedRateLimit
from workers.verification.smtp import OutgoingMail, SendResult, SmtpPool
from workers.verification.store import QUERIES

log = logging.getLogger("gelombang.email")

SENT = b"sent"
# The dead letter of a row an older door stored without a separately sealed
# address, met by a worker without the sealing keys: replay it after
# `gelombang keys reseal` (which seals those addresses) or from a worker that has them.
NO_SEALED_ADDRESS = ("stored without a sealed address and this worker has no sealing keys:"
                     " run `gelombang keys reseal`, then replay")


class Unopenable(Exception):
    """A job's address cannot be opened here; `reason` goes into its dead letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Message:
    """One job's message, and how often it was tried before."""

    job: Job
    mail: OutgoingMail
    attempts: int


class EmailVerifier(Verifier):
    """The email role's batch work."""

    role = "email"

    def __init__(self, settings: Settings, redis: RedisClient, pool: asyncpg.Pool,
                 smtp: SmtpPool, limit: SharedRateLimit,
                 metrics: WorkerMetrics | None = None) -> None:
        super().__init__(redis, pool, metrics)
        self.settings = settings.email
        self.base_url = settings.public.base_url
        self.smtp = smtp
        self.limit = limit
        keys = settings.keys
        keys.require_address()
        self.addresses = Sealer(keys.address_key_bytes(), keys.active_address_key_id)
        # Only for rows an older door stored without a sealed address; None
        # (the recommended setup) keeps every other field out of this process.
        self.blobs = (Sealer(keys.sealing_key_bytes(), keys.active_sealing_key_id)
                      if keys.has_sealing_keys() else None)
        self.signer = TokenSigner(settings.keys.token_key_bytes(),
                                  settings.keys.active_token_key_id)
        self.emails = VerificationEmails(settings.email.from_address)

    @property
    def sent(self) -> int:
        """Messages the relay took."""
        return self.counts.get("sent", 0)

    async def handle(self, batch: Batch) -> None:
        """Send the batch's messages and record what became of them."""
        decoded, dead = decode_jobs(batch)
        with self.claimed(decoded) as (jobs, done):
            await self._handle_claimed(batch, jobs, done, dead)

    async def _handle_claimed(self, batch: Batch, jobs: list[Job], done: list[bytes],
                              dead: list[DeadJob]) -> None:
        rows = await self.load(QUERIES["email_jobs"], jobs)
        messages: list[Message] = []
        left = await self.left_outcomes(batch, jobs)
        already_sent: list[Job] = []
        to_send: list[tuple[Job, asyncpg.Record]] = []
        for job in jobs:
            row = rows.get(job.registration_id)
            if row is None:
                dead.append(DeadJob(job.entry_id, "registration not stored", job.registration_id))
            elif row["state"] != "accepted" or row["email_verification"] != "pending":
                # Done before (a repeated job, or its other job), never to be sent.
                done.append(job.entry_id)
                self.count("skipped")
            elif left.get(job.registration_id) == SENT:
                already_sent.append(job)
            else:
                to_send.append((job, row))
        blobs = await self._legacy_blobs([job for job, row in to_send
                                          if row["sealed_address"] is None])
        for job, row in to_send:
            try:
                messages.append(self._message(job, row, blobs.get(job.registration_id)))
            except Unopenable as exc:
                dead.append(DeadJob(job.entry_id, exc.reason, job.registration_id))
        if already_sent:
            await self._record(batch, [(job, "sent", "") for job in already_sent])
            await self.forget_outcomes(batch, [job.registration_id for job in already_sent])
            done += [job.entry_id for job in already_sent]
        await self.finish(batch, done, dead)
        await self._send_until_done(batch, messages)

    async def _legacy_blobs(self, jobs: Sequence[Job]) -> dict[bytes, asyncpg.Record]:
        """Full blobs of rows stored without a sealed address, if this worker may open them."""
        if not jobs or self.blobs is None:
            return {}
        return await self.load(QUERIES["email_legacy_blobs"], jobs)

    def _address(self, job: Job, row: asyncpg.Record, blob: asyncpg.Record | None) -> str:
        """The address to write to, opened in memory; Unopenable says why not."""
        try:
            if row["sealed_address"] is not None:
                return open_address(self.addresses, job.registration_id,
                                    row["address_key_id"], row["sealed_address"])
            if self.blobs is None or blob is None:
                raise Unopenable(NO_SEALED_ADDRESS)
            return open_sealed(self.blobs, job.registration_id, blob["key_id"],
                               blob["sealed"]).email
        except (SealingError, EnvelopeError):
            # A key id this process does not know, or a damaged blob.
            raise Unopenable("sealed data cannot be opened") from None

    def _message(self, job: Job, row: asyncpg.Record, blob: asyncpg.Record | None) -> Message:
        address = self._address(job, row, blob)
        expires_at = int(time.time() + self.settings.token_ttl_hours * 3600)
        rid = row["registration_id"]
        link = verification_link(self.base_url, self.signer.issue(rid, expires_at))
        try:
            mail = self.emails.make(address, rid, link, expires_at)
        except ValueError:
            raise Unopenable("sealed data cannot be opened") from None
        return Message(job, mail, row["attempts"])

    async def _send_until_done(self, batch: Batch, messages: list[Message]) -> None:
        """Send; record; acknowledge what is final; wait and send the rest again."""
        round_number = 0
        while messages:
            results = await self._send(messages)
            tried: list[tuple[Job, str, str]] = []  # job, new state, error
            finished, dead, again = [], [], []
            for message, result in zip(messages, results, strict=True):
                if result.outcome == "unsent":
                    again.append(message)  # the relay's fault, not the message's
                    continue
                message.attempts += 1
                if result.outcome == "sent":
                    tried.append((message.job, "sent", ""))
                    finished.append(message.job.entry_id)
                elif result.outcome == "refused":
                    tried.append((message.job, "failed", result.detail))
                    finished.append(message.job.entry_id)
                elif message.attempts >= self.settings.max_attempts:
                    tried.append((message.job, "failed", result.detail))
                    dead.append(DeadJob(message.job.entry_id,
                                        f"email not sent after {message.attempts} tries: "
                                        f"{result.detail}", message.job.registration_id))
                else:
                    tried.append((message.job, "deferred", result.detail))
                    again.append(message)
            if tried:
                await self._record(batch, tried)
            await self.finish(batch, finished, dead)
            if not again:
                return
            if self.runtime.stopping.is_set():
                raise BatchStopped  # what was sent is recorded; the rest stays pending
            self.count("retried", sum(r.outcome == "unsent" for r in results))
            round_number += 1
            delay = backoff_seconds(round_number, self.settings.retry_base_seconds,
                                    self.settings.retry_max_seconds)
            log.info("email: %d messages again in %.1f s (%d not sent: relay unavailable)",
                     len(again), delay, sum(r.outcome == "unsent" for r in results))
            if await self.runtime.sleep_or_stop(delay):
                raise BatchStopped
            messages = again

    async def _send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Reserve the tokens, then send each group of messages as its tokens fall due."""
        results: list[SendResult] = []
        most = self.limit.most_per_reservation()
        for start in range(0, len(messages), most):
            group = messages[start:start + most]
            if self.runtime.stopping.is_set():
                break
            delays = await self.limit.reserve(len(group))
            # The group goes when its last token is due: at most a quarter of a
            # second's worth, so the bucket's bound holds within that.
            if delays[-1] > 0 and await self.runtime.sleep_or_stop(delays[-1]):
                break
            results += await self.smtp.send([message.mail for message in group])
        # Stopping: the groups sent are recorded all the same (else they would
        # go out twice); the rest is unsent, and stays pending.
        results += [SendResult("unsent", "stopping")] * (len(messages) - len(results))
        return results

    async def _record(self, batch: Batch, tried: Sequence[tuple[Job, str, str]]) -> None:
        """One statement for every try of this round (and the counter)."""
        ids = [WireUUID(job.registration_id) for job, _, _ in tried]
        states = [state for _, state, _ in tried]
        errors = [error[:200] or None for _, _, error in tried]

        async def write(connection: Connection) -> asyncpg.Record | None:
            return await connection.fetchrow(QUERIES["record_email_outcomes"], ids, states,
                                             errors, counter_shard())

        row = await self.record(batch, write, {job.registration_id: SENT
                                               for job, state, _ in tried if state == "sent"})
        self.count("sent", states.count("sent"))
        self.count("failed", states.count("failed"))
        self.count("retried", states.count("deferred"))
        if row is not None:
            self.waited(row["waited"])


async def close_quietly(smtp: SmtpPool) -> None:
    """Close the SMTP sessions, bounded."""
    try:
        await asyncio.wait_for(smtp.close(), 5.0)
    except TimeoutError:
        pass
