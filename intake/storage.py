"""The door's view of PostgreSQL: registration status, funnel counts, email links.

Intake never waits on PostgreSQL: the pool is small
(`postgres.door_pool_max`), created on first use rather than at start (a door
whose database is down still takes registrations), and every query is bounded
by `postgres.door_timeout_seconds`. A read that cannot be answered in time
raises StorageUnavailable, which the handlers turn into 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from config.settings import Settings
from database.audit import archived_page
from database.counters import COUNTER_SHARDS
from database.funnel import funnel_counts
from database.queries import load
from database.verify_email import EmailOutcome, verify_email
from intake.errors import IntakeError

# The failures that mean "PostgreSQL cannot answer now".
_UNAVAILABLE: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                       asyncpg.exceptions.InternalClientError)
QUERIES: Final = load("door.sql")


@dataclass(frozen=True, slots=True)
class EmailResend:
    """What a resend found, and whether it moved the email back to `pending`."""

    state: str
    previous: str  # email_verification before the resend
    moved: bool


class StorageUnavailable(IntakeError):
    """PostgreSQL did not answer in time (down, overloaded, or not reachable)."""


class StatusStore:
    """Lazily pooled, time-bounded reads for the door's status and funnel endpoints."""

    def __init__(self, settings: Settings) -> None:
        self._dsn = settings.postgres.dsn
        self._pool_max = settings.postgres.door_pool_max
        self._timeout = settings.postgres.door_timeout_seconds
        self._pool: asyncpg.Pool | None = None
        self._creating = asyncio.Lock()

    async def registration(self, registration_id: uuid.UUID) -> dict[str, Any] | None:
        """The stored states of a registration, or None while it is not stored."""
        async with self._bounded() as pool:
            row = await pool.fetchrow(QUERIES["registration_status"], registration_id)
        return dict(row) if row is not None else None

    async def resend_email(self, registration_id: uuid.UUID) -> EmailResend | None:
        """Move a `sent` or `failed` email of an accepted registration back to `pending`.

        None when no such registration is stored. Commits on its own.
        """
        async with self._bounded() as pool:
            row = await pool.fetchrow(QUERIES["resend_email"], registration_id,
                                      random.randrange(COUNTER_SHARDS))
        if row is None:
            return None
        return EmailResend(row["state"], row["previous"], row["moved"])

    async def verify_email(self, registration_id: uuid.UUID) -> EmailOutcome:
        """Mark the registration's email verified (its link was opened); idempotent."""
        async with self._bounded() as pool, pool.acquire() as connection:
            return await verify_email(connection, registration_id)

    async def funnel(self) -> dict[str, int]:
        """The funnel counters, summed over their shards (only the non-zero ones)."""
        async with self._bounded() as pool:
            return await funnel_counts(pool)

    async def audit_page(self, before: tuple[int, int] | None,
                         limit: int) -> list[asyncpg.Record]:
        """Archived admin audit entries, newest first, before an entry id."""
        async with self._bounded() as pool:
            return await archived_page(pool, before, limit)

    async def close(self) -> None:
        """Close the pool, if one was made."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @contextlib.asynccontextmanager
    async def _bounded(self) -> AsyncIterator[asyncpg.Pool]:
        try:
            async with asyncio.timeout(self._timeout):
                yield await self._get_pool()
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(type(exc).__name__) from None

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._creating:
                if self._pool is None:
                    # min_size 0: connections are made when reads need them.
                    self._pool = await asyncpg.create_pool(
                        self._dsn, min_size=0, max_size=self._pool_max,
                        timeout=self._timeout, command_timeout=self._timeout,
                    )
        assert self._pool is not None
        return self._pool
