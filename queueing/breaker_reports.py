"""Circuit breaker reports: each NIK worker's breaker state, for operators.

A breaker lives in its worker process, which has no metrics port. So each
worker writes its state every few seconds into one Redis hash (field
`<service>:<worker>`, value `<state> <unix time>`), and the door's /metrics
exports it as `gelombang_breaker_open{service, worker}`. A report older than
`STALE_SECONDS` is a worker that stopped reporting (killed, or gone): it is
left out, and removed by the next reader.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

from queueing.keys import BREAKER_REPORTS
from queueing.redis_client import RedisClient

REPORT_SECONDS: Final = 2.0
STALE_SECONDS: Final = 10.0


@dataclass(frozen=True, slots=True)
class BreakerReport:
    """One worker's breaker, as it last reported."""

    service: str
    worker: str
    state: str  # closed | open | half_open
    at: float

    @property
    def is_open(self) -> bool:
        """Calls held back: open, or half-open with only a probe going out."""
        return self.state != "closed"


async def report(redis: RedisClient, service: str, worker: str, state: str) -> None:
    """Write this worker's breaker state now."""
    await redis.hset(BREAKER_REPORTS, f"{service}:{worker}", f"{state} {time.time():.3f}")


async def withdraw(redis: RedisClient, service: str, worker: str) -> None:
    """Remove this worker's report (a clean stop)."""
    await redis.hdel(BREAKER_REPORTS, f"{service}:{worker}")


async def current_reports(redis: RedisClient, now: float | None = None) -> list[BreakerReport]:
    """The fresh reports, by service and worker; stale ones are removed."""
    now = time.time() if now is None else now
    raw: Any = await redis.hgetall(BREAKER_REPORTS)
    fresh: list[BreakerReport] = []
    stale: list[bytes] = []
    for field, value in raw.items():
        service, _, worker = field.decode().partition(":")
        state, _, at_text = value.decode().partition(" ")
        try:
            at = float(at_text)
        except ValueError:
            stale.append(field)
            continue
        if now - at > STALE_SECONDS:
            stale.append(field)
        else:
            fresh.append(BreakerReport(service, worker, state, at))
    if stale:
        await redis.hdel(BREAKER_REPORTS, *stale)
    return sorted(fresh, key=lambda r: (r.service, r.worker))
