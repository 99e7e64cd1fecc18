"""Recording what an outside service has already done, through a database outage.

Once the ministry has answered or the relay has taken a message, failing the
job would make its next delivery ask the ministry again (spending its small
capacity) or send the applicant a second email. So the write that records
the outcome is retried with back-off while PostgreSQL is away, the job
staying in hand (the consumer keeps it from being reclaimed). Only a worker
told to stop gives up, and then the job is done again after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import asyncpg

from workers.drain import TRANSIENT
from workers.jobs import JobDeferred
from workers.retry import backoff_seconds
from workers.store import Connection

log = logging.getLogger("gelombang.recording")

RETRY_BASE_SECONDS: Final = 0.2
RETRY_MAX_SECONDS: Final = 5.0

T = TypeVar("T")


async def record_after_the_fact(pool: asyncpg.Pool,
                                write: Callable[[Connection], Awaitable[T]],
                                stopping: asyncio.Event, what: str) -> T:
    """Run `write` on a pooled connection until it commits (JobDeferred on stop)."""
    attempt = 0
    while True:
        try:
            async with pool.acquire() as connection:
                return await write(connection)
        except TRANSIENT as exc:
            attempt += 1
            delay = backoff_seconds(attempt, RETRY_BASE_SECONDS, RETRY_MAX_SECONDS)
            log.warning("cannot record %s yet (%s); again in %.1f s", what,
                        type(exc).__name__, delay)
        try:
            await asyncio.wait_for(stopping.wait(), delay)
        except TimeoutError:
            continue
        raise JobDeferred
