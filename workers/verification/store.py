"""What the verification steps read and write in PostgreSQL (workers/sql/verification.sql).

Every state change is guarded by the state it leaves (`pending` → …), and a
funnel counter moves in the same statement only when the row did change.
So a job done twice (a worker killed after the change, before the XACK) or a
link clicked twice changes nothing the second time and counts nothing twice,
and the funnel stays equal to the table. The workers' batch statements are
run by workers/verification/email.py and nik.py; the door's link is here.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from typing import Final, Literal

from workers.queries import load
from workers.store import COUNTER_SHARDS, Connection, add_counts

QUERIES: Final = load("verification.sql")

NikOutcome = Literal["verified", "mismatch", "not_found", "failed"]

EmailOutcome = Literal["verified", "already_verified", "not_sent", "unknown"]


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
