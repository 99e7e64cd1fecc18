"""What the verification steps read and write in PostgreSQL.

Every state change is guarded by the state it leaves (`pending` → …), and a
funnel counter moves in the same transaction only when the row did change.
So a job done twice (a worker killed after the change, before the XACK) or a
link clicked twice changes nothing the second time and counts nothing twice,
and the funnel stays equal to the table.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Final, Literal

from workers.drain import COUNTER_SHARDS
from workers.queries import load
from workers.store import Connection, add_counts

QUERIES: Final = load("verification.sql")

NikOutcome = Literal["verified", "mismatch", "not_found", "failed"]
# Outcomes that are the ministry's answer about the NIK itself, and may be
# reused for it; `failed` says only that we could not ask.
CACHEABLE: Final = frozenset({"verified", "mismatch", "not_found"})
_NIK_COUNTER: Final = {"verified": "nik_verified", "mismatch": "nik_rejected",
                       "not_found": "nik_rejected"}

EmailOutcome = Literal["verified", "already_verified", "not_sent", "unknown"]


@dataclass(frozen=True, slots=True)
class JobSubject:
    """The stored registration a verification job is about."""

    state: str
    email_verification: str
    nik_verification: str
    nik_hash: bytes
    key_id: str
    sealed: bytes

    def __repr__(self) -> str:
        return (f"JobSubject(state={self.state!r}, email={self.email_verification!r}, "
                f"nik={self.nik_verification!r}, <sealed>)")


async def job_subject(connection: Connection, registration_id: uuid.UUID) -> JobSubject | None:
    """The registration, or None if it is not stored (never for a handed-off job)."""
    row = await connection.fetchrow(QUERIES["registration_for_job"], registration_id)
    return JobSubject(*row) if row is not None else None


async def cached_nik_outcome(connection: Connection, nik_hash: bytes) -> NikOutcome | None:
    """The ministry's earlier answer for this NIK, if it was asked before."""
    outcome: NikOutcome | None = await connection.fetchval(QUERIES["cached_nik_outcome"],
                                                           nik_hash)
    return outcome


async def record_nik_outcome(connection: Connection, registration_id: uuid.UUID,
                             nik_hash: bytes, outcome: NikOutcome) -> bool:
    """Store the outcome (and cache the ministry's answer); False if it was already set."""
    async with connection.transaction():
        if outcome in CACHEABLE:
            await connection.execute(QUERIES["cache_nik_outcome"], nik_hash, outcome)
        changed = await connection.fetchval(QUERIES["set_nik_outcome"], registration_id,
                                            outcome) is not None
        if changed and outcome in _NIK_COUNTER:
            await add_counts(connection, random.randrange(COUNTER_SHARDS),
                             Counter({_NIK_COUNTER[outcome]: 1}))
    return changed


async def count_email_attempt(connection: Connection, registration_id: uuid.UUID) -> int:
    """Note a send about to be tried; the number of tries including this one."""
    attempts: int = await connection.fetchval(QUERIES["count_email_attempt"],
                                              registration_id, None)
    return attempts


async def note_email_error(connection: Connection, registration_id: uuid.UUID,
                           error: str) -> None:
    """Keep the last failure's kind (an SMTP code and class name, never an address)."""
    await connection.execute(QUERIES["note_email_error"], registration_id, error[:200])


async def record_email_sent(connection: Connection, registration_id: uuid.UUID) -> bool:
    """`pending` → `sent`, counted once; False if it had already moved on."""
    async with connection.transaction():
        await connection.execute(QUERIES["note_email_sent"], registration_id)
        changed = await connection.fetchval(QUERIES["set_email_sent"],
                                            registration_id) is not None
        if changed:
            await add_counts(connection, random.randrange(COUNTER_SHARDS),
                             Counter({"email_sent": 1}))
    return changed


async def record_email_failed(connection: Connection, registration_id: uuid.UUID,
                              error: str) -> bool:
    """`pending` → `failed` (a permanent refusal, or out of tries)."""
    async with connection.transaction():
        await connection.execute(QUERIES["note_email_error"], registration_id, error[:200])
        return await connection.fetchval(QUERIES["set_email_failed"],
                                         registration_id) is not None


async def verify_email(connection: Connection, registration_id: uuid.UUID) -> EmailOutcome:
    """Mark the email verified for a valid link; a second click finds it verified."""
    async with connection.transaction():
        if await connection.fetchval(QUERIES["set_email_verified"], registration_id):
            await add_counts(connection, random.randrange(COUNTER_SHARDS),
                             Counter({"email_verified": 1}))
            return "verified"
        state: str | None = await connection.fetchval(QUERIES["email_state"], registration_id)
    if state is None:
        return "unknown"
    return "already_verified" if state == "verified" else "not_sent"
