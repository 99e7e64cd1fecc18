"""Back-off between tries of a call to an outside service."""

from __future__ import annotations

import random


def backoff_seconds(attempt: int, base: float, ceiling: float,
                    retry_after: float | None = None,
                    rng: random.Random | None = None) -> float:
    """How long to wait after the `attempt`-th failed try (1 = the first).

    Exponential, capped at `ceiling`, with "equal jitter" (half fixed, half
    random) so that many jobs failing together do not come back together,
    while none comes back much sooner than the schedule says. A server's
    Retry-After is a floor: it knows when it will have room again.
    """
    draw = (rng or random).random()
    step = min(ceiling, base * 2.0 ** min(attempt - 1, 32))
    delay = step / 2 + draw * step / 2
    return max(delay, retry_after or 0.0)
