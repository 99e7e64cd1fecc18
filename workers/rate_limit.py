"""An outbound rate limit shared by every worker process, kept in Redis.

The SMTP relay and the ministry's NIK API each get one token bucket
(queueing/lua/outbound_bucket.lua), so the limit holds for the whole
deployment however many workers run. A bucket of rate R and burst B lets at
most B + R·t calls start in any window of t seconds: with B = 1 that is at
most R + 1 in any one second.
"""

from __future__ import annotations

import asyncio
import logging

from queueing.keys import outbound_bucket
from queueing.redis_client import RedisClient
from queueing.scripts import PipelinedScript, script_source
from workers.drain import TRANSIENT

log = logging.getLogger("gelombang.rate_limit")


class SharedRateLimit:
    """Waits for a token of one service's bucket before each call."""

    def __init__(self, redis: RedisClient, service: str, rate: float, burst: int) -> None:
        self._script = PipelinedScript(redis, script_source("outbound_bucket"))
        self._key = outbound_bucket(service)
        self._args = (repr(float(rate)), int(burst))
        self.service = service

    async def acquire(self) -> None:
        """Return once a call may start (a token reserved, then waited for);
        waits out Redis outages too."""
        while True:
            try:
                wait_us = await self._script.run((self._key,), self._args)
                break
            except TRANSIENT as exc:
                log.warning("%s rate limit: Redis unavailable (%s); waiting",
                            self.service, type(exc).__name__)
                await asyncio.sleep(1.0)
        if int(wait_us) > 0:
            await asyncio.sleep(int(wait_us) / 1_000_000)
