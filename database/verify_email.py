"""The door's email link: a registration's email marked verified, counted once."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Final, Literal

from database.counters import add_counts, counter_shard
from database.queries import Connection, load

QUERIES: Final = load("verification.sql")

EmailOutcome = Literal["verified", "already_verified", "not_sent", "unknown"]


async def verify_email(connection: Connection, registration_id: uuid.UUID) -> EmailOutcome:
    """Mark the email verified for a valid link; a second click finds it verified."""
    async with connection.transaction():
        if await connection.fetchval(QUERIES["set_email_verified"], registration_id):
            await add_counts(connection, counter_shard(), Counter({"email_verified": 1}))
            return "verified"
        state: str | None = await connection.fetchval(QUERIES["email_state"], registration_id)
    if state is None:
        return "unknown"
    return "already_verified" if state == "verified" else "not_sent"
