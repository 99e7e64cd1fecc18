"""A circuit breaker for calls to an outside service that can go down.

Closed: calls go through; `failures_to_open` failures in a row open it.
Open: no call goes out for `open_seconds`; callers wait (their jobs stay in
hand, so none is lost). Then half-open: exactly one call, the probe, goes
out; its success closes the breaker, its failure opens it again. So an
outage of any length costs the service one call per `open_seconds` instead
of every job's retries.

The breaker also carries a "hold": when the service answers 429 with
Retry-After, no call goes out until that time, without counting a failure
(the service is up, only full).

One breaker per process: each worker finds out about an outage within
`failures_to_open` of its own calls, which is what the ministry's side sees.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from enum import Enum
from typing import Final

# How often a waiting caller looks again while a probe is out.
_PROBE_POLL_SECONDS: Final = 0.05


class BreakerState(Enum):
    """Where the breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Decides whether a call may go out now; told the outcome of each."""

    def __init__(self, failures_to_open: int, open_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures_to_open = failures_to_open
        self.open_seconds = open_seconds
        self._clock = clock
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_out = False
        self._hold_until = 0.0
        self.times_opened = 0

    def permit(self) -> tuple[float, bool]:
        """(0, is_probe) if a call may go out now, else (seconds to wait, False)."""
        now = self._clock()
        if now < self._hold_until:
            return self._hold_until - now, False
        if self.state is BreakerState.CLOSED:
            return 0.0, False
        if self.state is BreakerState.OPEN:
            reopens = self._opened_at + self.open_seconds
            if now < reopens:
                return reopens - now, False
            self.state = BreakerState.HALF_OPEN
        if self._probe_out:
            return _PROBE_POLL_SECONDS, False
        self._probe_out = True
        return 0.0, True

    def current_state(self) -> BreakerState:
        """The state as of now: an open breaker whose time is up is half-open."""
        if (self.state is BreakerState.OPEN
                and self._clock() >= self._opened_at + self.open_seconds):
            return BreakerState.HALF_OPEN
        return self.state

    async def wait_turn(self) -> bool:
        """Wait until a call may go out; True if that call is the half-open probe."""
        while True:
            wait, is_probe = self.permit()
            if wait <= 0:
                return is_probe
            await asyncio.sleep(min(wait, 1.0))

    def succeeded(self) -> None:
        """A call got an answer from the service: it is up."""
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._probe_out = False

    def failed(self) -> None:
        """A call failed (5xx, timeout, connection refused)."""
        self._probe_out = False
        if self.state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self.state is BreakerState.CLOSED and self._failures >= self.failures_to_open:
            self._open()

    def released(self) -> None:
        """A permitted call ended without a verdict (cancelled): free the probe slot."""
        self._probe_out = False

    def hold(self, seconds: float) -> None:
        """The service asked for a pause (429 Retry-After): no calls until then."""
        self._probe_out = False
        self._hold_until = max(self._hold_until, self._clock() + seconds)

    def _open(self) -> None:
        self.state = BreakerState.OPEN
        self._opened_at = self._clock()
        self.times_opened += 1
