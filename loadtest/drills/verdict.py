"""A drill's verdict: every 202 stored exactly once, each job done at most once.

Counted from the system's real outputs, never from its own bookkeeping: the
`registrations` table, the mail sink's messages, the NIK simulator's count of
NIKs it answered twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import asyncpg

from config.settings import Settings
from loadtest.drills.traffic import SurgeRecord
from loadtest.drills.truth import refused_yet_stored, unknown_outcomes
from loadtest.mailbox import registration_ids_of_mail
from queueing.sealing import KeyedHasher

SETTLE_POLL_SECONDS: Final = 0.5


@dataclass(frozen=True)
class Tolerance:
    """What a drill's fault may legitimately cause (zero for everything else)."""

    # Broken connections: only when the door itself is killed.
    connection_errors: bool = False
    # Emails or NIK checks done twice: only when that worker is killed between
    # the call and recording it (documented, at least once never zero times).
    emails_doubled: int = 0
    nik_checks_doubled: int = 0


@dataclass(frozen=True)
class Verdict:
    """The counts of one drill, and whether they keep the invariant."""

    drill: str
    sent: int
    accepted: int
    limited: int
    unavailable: int
    unexpected: int
    connection_errors: int
    hangs: int
    without_retry_after: int
    stored: int
    missing: int
    doubled: int
    emails_doubled: int
    nik_checks_doubled: int
    unsettled: int
    seconds: float
    failures: tuple[str, ...]
    # 503 outcome_unknown answers (they do not claim that nothing was stored).
    unknown: int = 0
    # Refusals claiming that nothing was stored, for a registration that was.
    refused_yet_stored: int = 0

    @property
    def ok(self) -> bool:
        """Whether the invariant held."""
        return not self.failures

    def line(self) -> str:
        """The one-line verdict a drill prints."""
        head = "PASS" if self.ok else "FAIL"
        counts = (f"sent={self.sent} 202={self.accepted} 429={self.limited} "
                  f"503={self.unavailable} other={self.unexpected} "
                  f"conn_errors={self.connection_errors} hangs={self.hangs} "
                  f"stored={self.stored} missing={self.missing} doubled={self.doubled} "
                  f"emails_doubled={self.emails_doubled} "
                  f"nik_doubled={self.nik_checks_doubled} unknown={self.unknown} "
                  f"refused_yet_stored={self.refused_yet_stored} ({self.seconds:.1f} s)")
        why = f"  [{'; '.join(self.failures)}]" if self.failures else ""
        return f"{head} {self.drill}: {counts}{why}"

    def as_dict(self) -> dict[str, Any]:
        """For results.json."""
        return {**asdict(self), "ok": self.ok, "failures": list(self.failures)}


async def settle(pg: asyncpg.Connection, ids: list[uuid.UUID], within: float) -> int:
    """Wait until every id is stored with both checks done; the number still not."""
    deadline = time.monotonic() + within
    while True:
        done = await pg.fetchval(
            "SELECT count(*) FROM registrations WHERE registration_id = ANY($1::uuid[])"
            " AND (state <> 'accepted' OR (email_verification <> 'pending'"
            "      AND nik_verification <> 'pending'))", ids)
        left = len(ids) - int(done)
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(SETTLE_POLL_SECONDS)


async def judge(drill: str, record: SurgeRecord, settings: Settings, maildir: Path,
                nik_sim_url: str, tolerance: Tolerance, settle_seconds: float) -> Verdict:
    """Count everything and compare it with the invariant."""
    ids = [a.registration_id for a in record.accepted if a.registration_id is not None]
    hasher = KeyedHasher(settings.keys.hash_key_bytes())
    nik_hashes = [hasher.digest(a.person.nik) for a in record.applicants]
    pg = await asyncpg.connect(settings.postgres.dsn)
    try:
        unsettled = await settle(pg, ids, settle_seconds)
        stored_ids = {row[0] for row in await pg.fetch(
            "SELECT registration_id FROM registrations WHERE registration_id = ANY($1::uuid[])",
            ids)}
        doubled = int(await pg.fetchval(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM registrations"
            " WHERE nik_hash = ANY($1::bytea[]) GROUP BY nik_hash) AS per_nik", nik_hashes))
    finally:
        await pg.close()
    mail = Counter(registration_ids_of_mail(maildir))
    emails_doubled = sum(mail[str(i)] - 1 for i in ids if mail[str(i)] > 1)
    async with aiohttp.ClientSession() as session, \
            session.get(f"{nik_sim_url}/admin/stats") as reply:
        nik_doubled = int((await reply.json())["answered_again"])
    missing = len(ids) - len(stored_ids)
    falsely_refused = refused_yet_stored(record.applicants)
    failures = _failures(record, tolerance, missing=missing, doubled=doubled,
                         emails_doubled=emails_doubled, nik_doubled=nik_doubled,
                         unsettled=unsettled)
    if falsely_refused:
        failures.append(f"{falsely_refused} told nothing was stored, yet stored")
    return Verdict(
        drill=drill, sent=len(record.applicants), accepted=len(ids),
        limited=record.statuses[429], unavailable=record.statuses[503],
        unexpected=record.unexpected, connection_errors=record.connection_errors,
        hangs=record.hangs, without_retry_after=record.without_retry_after,
        stored=len(stored_ids), missing=missing, doubled=doubled,
        emails_doubled=emails_doubled, nik_checks_doubled=nik_doubled, unsettled=unsettled,
        seconds=record.seconds, failures=tuple(failures),
        unknown=unknown_outcomes(record.applicants), refused_yet_stored=falsely_refused)


def _failures(record: SurgeRecord, tolerance: Tolerance, *, missing: int, doubled: int,
              emails_doubled: int, nik_doubled: int, unsettled: int) -> list[str]:
    checks = [
        (missing == 0, f"{missing} answered 202 but not stored"),
        (doubled == 0, f"{doubled} stored twice"),
        (record.unexpected == 0, f"{record.unexpected} answers other than 202/429/503"),
        (record.hangs == 0, f"{record.hangs} requests hung"),
        (record.without_retry_after == 0,
         f"{record.without_retry_after} 429/503 without Retry-After"),
        (record.connection_errors == 0 or tolerance.connection_errors,
         f"{record.connection_errors} broken connections"),
        (emails_doubled <= tolerance.emails_doubled,
         f"{emails_doubled} emails sent twice (allowed {tolerance.emails_doubled})"),
        (nik_doubled <= tolerance.nik_checks_doubled,
         f"{nik_doubled} NIKs checked twice (allowed {tolerance.nik_checks_doubled})"),
        (unsettled == 0, f"{unsettled} not stored and checked in time"),
        (record.gave_up == 0, f"{record.gave_up} applicants got no 202 within their patience"),
    ]
    return [why for held, why in checks if not held]
