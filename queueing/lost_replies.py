"""Finding out what Redis did with admission calls whose replies were lost.

A call sent to Redis whose reply never came (a timeout, a connection broken
after sending) may have run: Redis may have taken the group just before it
stalled or died. Answering "nothing stored" would then be false, so the door
asks (queueing/lua/outcome.lua), on whatever connection it can get, until it
learns each call's fate or its time is up: the call's decisions, or that it
had not run and now never will (the script fences it). A call it cannot
learn about stays OutcomeUnknown: possibly queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

from queueing.admission import AdmissionScript, GroupCall, GroupResult
from queueing.errors import OutcomeUnknown, QueueingError, QueueUnavailable
from queueing.redis_client import REDIS_UNAVAILABLE

# Between two tries when the last failed at once (a refused connection: Redis
# restarting), so the door asks again shortly, not in a tight loop.
RECHECK_PAUSE_SECONDS: Final = 0.05


async def find_out(script: AdmissionScript, calls: Sequence[GroupCall], *, per_try: float,
                   within: float) -> list[GroupResult | QueueingError]:
    """Each call's result: its decisions, QueueUnavailable (did not run, fenced), or
    OutcomeUnknown when Redis did not say within `within` seconds (each try
    bounded by `per_try`, the door's Redis timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    found: list[GroupResult | QueueingError] = [
        OutcomeUnknown("Redis did not say within the check") for _ in calls]
    left = list(range(len(calls)))
    while left and (remaining := deadline - loop.time()) > 0:
        replies: list[GroupResult | BaseException | None]
        try:
            async with asyncio.timeout(min(remaining, per_try)):
                replies = await script.outcomes([calls[i] for i in left])
        except REDIS_UNAVAILABLE as exc:
            replies = [exc for _ in left]
        still = []
        for index, reply in zip(left, replies, strict=True):
            if reply is None:  # it had not run, and now never will
                found[index] = QueueUnavailable("not run; fenced")
            elif isinstance(reply, GroupResult):
                found[index] = reply
            else:
                still.append(index)
        left = still
        if left:
            await asyncio.sleep(min(RECHECK_PAUSE_SECONDS, max(0.0, deadline - loop.time())))
    return found
