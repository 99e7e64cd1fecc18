"""An outbound rate limit shared by every worker process, kept in Redis.

The SMTP relay and the ministry's NIK API each get one token bucket
(queueing/lua/outbound_bucket.lua), so the limit holds for the whole
deployment however many workers run. A bucket of rate R and burst B lets at
most B + R·t calls start in any window of t seconds: with B = 1 that is at
most R + 1 in any one second.

Tokens are reserved for a batch of calls in one script call (`reserve`),
each with its own due time, so a worker makes one round trip per batch,
not per call. A reservation reaches at most a quarter of a second ahead
(`TokenDispenser`), so a process never holds tokens another one (or a
registrant who asked for a resend) could use sooner.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Final

from queueing.keys import outbound_bucket
from queueing.redis_client import RedisClient
from queueing.scripts import PipelinedScript, script_source
from workers.runtime.connections import TRANSIENT

log = logging.getLogger("gelombang.rate_limit")

# How far ahead one reservation reaches, in seconds of the rate.
RESERVE_AHEAD_SECONDS: Final = 0.25


class SharedRateLimit:
    """Reserves tokens of one service's bucket before calls."""

    def __init__(self, redis: RedisClient, service: str, rate: float, burst: int) -> None:
        self._script = PipelinedScript(redis, script_source("outbound_bucket"))
        self._key = outbound_bucket(service)
        self.rate = float(rate)
        self._args = (repr(self.rate), int(burst))
        self.service = service
        self.reserved = 0  # tokens this process took, for the outbound-rate metric

    def most_per_reservation(self) -> int:
        """The most tokens one reservation takes: a quarter of a second's worth."""
        return max(1, int(self.rate * RESERVE_AHEAD_SECONDS))

    async def reserve(self, count: int) -> list[float]:
        """Reserve `count` tokens; how many seconds from now each one is due.

        Waits out Redis outages (a call that cannot get a token does not go)."""
        while True:
            try:
                level = float(await self._script.run((self._key,), (*self._args, count)))
                self.reserved += count
                break
            except TRANSIENT as exc:
                log.warning("%s rate limit: Redis unavailable (%s); waiting",
                            self.service, type(exc).__name__)
                await asyncio.sleep(1.0)
        return [max(0.0, (j - level) / self.rate) for j in range(1, count + 1)]

    async def acquire(self) -> None:
        """Return once one call may start."""
        [delay] = await self.reserve(1)
        if delay > 0:
            await asyncio.sleep(delay)


class TokenDispenser:
    """Hands out one process's tokens one call at a time, reserving them in batches.

    When it runs out it reserves as many as callers are waiting or announced
    (a batch announces its calls before they queue for a connection), at most
    a quarter of a second's worth, in one script call. Only announced or
    waiting callers are reserved for, so every token reserved is used.
    """

    def __init__(self, limit: SharedRateLimit) -> None:
        self._limit = limit
        self._due: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._announced = 0

    def announce(self, count: int) -> None:
        """`count` callers will take a token soon (or `withdraw` theirs)."""
        self._announced += count

    def withdraw(self) -> None:
        """An announced caller will not take its token after all."""
        self._announced = max(0, self._announced - 1)

    async def take(self, announced: bool = False) -> None:
        """Return once this caller's token is due (`announced`: it was announced)."""
        if announced:
            self.withdraw()
        self._waiting += 1
        try:
            async with self._lock:
                if not self._due:
                    count = min(max(self._waiting, self._announced),
                                self._limit.most_per_reservation())
                    delays = await self._limit.reserve(count)
                    now = time.monotonic()
                    self._due.extend(now + delay for delay in delays)
                due = self._due.popleft()
        finally:
            self._waiting -= 1
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
