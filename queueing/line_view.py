"""A door's copy of the waiting room's line, and what it answers from it without Redis;
and the door's watch on the order in which turns are taken.

`LineView` is refreshed by each tick (queueing/line.py, `Line.tick`): the
served counter, the tail, the gone positions past the served counter and the
served counter's recent history. People ahead, whether a position is gone,
when a turn came and the measured release rate are computed from it alone.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from queueing.keys import STANDING_WAVE

# The window over which the served counter's rate is measured for the ETA.
RATE_WINDOW_SECONDS: Final = 30.0


@dataclass
class LineView:
    """One door's copy of the line in force, as of its last tick."""

    wave: str = STANDING_WAVE
    phase: str = "open"
    served: int = 0
    tail: int = 0
    drawn: int = -1
    opens_at: int = 0
    closes_at: int = 0
    seed: bytes = b""
    waiting: int = 0
    prequeue_size: int = 0
    expired: int = 0
    used: int = 0
    left: int = 0
    # Gone positions past `served`, sorted (pruned as served passes them).
    gone: list[int] = field(default_factory=list)
    gone_cursor: int = 0
    # Gone positions the served counter has passed (skipped, not served), as seen here.
    skipped: int = 0
    # (served, Unix ms it was reached), ascending.
    turns: list[tuple[int, int]] = field(default_factory=list)
    # (monotonic time, live tickets served) samples for the rate.
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=256))
    fresh: bool = False

    def ahead(self, position: int) -> int:
        """Live tickets with positions in (served, position)."""
        if position <= self.served:
            return 0
        lo = bisect.bisect_right(self.gone, self.served)
        hi = bisect.bisect_left(self.gone, position)
        return position - self.served - 1 - (hi - lo)

    def is_gone(self, position: int) -> bool:
        """Whether a position past the served counter was left or skipped."""
        at = bisect.bisect_left(self.gone, position)
        return at < len(self.gone) and self.gone[at] == position

    def measured_rate(self, configured: float) -> float:
        """Live tickets given their turn a second over the last RATE_WINDOW_SECONDS (gone
        positions the served counter skipped are not counted: `ahead` does not count
        them either); `configured` until there are 3 s of history with progress."""
        if len(self.samples) >= 2:
            last_at, last = self.samples[-1]
            first_at, first = next(sample for sample in self.samples
                                   if sample[0] >= last_at - RATE_WINDOW_SECONDS)
            if last_at - first_at >= 3.0 and last > first:
                return (last - first) / (last_at - first_at)
        return configured

    def apply(self, reply: list[Any]) -> None:
        """Take one tick's reply (line.lua's 'tick')."""
        (phase, served, tail, drawn, opens_at, closes_at, seed, cursor, gone_log, turns,
         waiting, prequeue_size, expired, used, left) = reply
        self.phase = text(phase)
        self.served, self.tail, self.drawn = int(served), int(tail), int(drawn)
        self.opens_at, self.closes_at = int(opens_at), int(closes_at)
        self.seed = bytes.fromhex(text(seed))
        self.waiting, self.prequeue_size = int(waiting), int(prequeue_size)
        self.expired, self.used, self.left = int(expired), int(used), int(left)
        for position in gone_log:
            bisect.insort(self.gone, int(position))
        self.gone_cursor = int(cursor)
        passed = bisect.bisect_right(self.gone, self.served)
        self.skipped += passed
        del self.gone[:passed]
        for member in turns:
            value, _, at_ms = text(member).partition(":")
            self.turns.append((int(value), int(at_ms)))
        if self.phase == "prequeue" or self.waiting == 0:
            # Nothing to release: a rate measured over this time would be the arrivals',
            # not the line's (the opening's first ETAs came out twice too long).
            self.samples.clear()
        else:
            self.samples.append((time.monotonic(), self.served - self.skipped))
        self.fresh = True

    def last_turn_ms(self) -> int:
        """When the served counter last advanced (Unix ms; 0 if this door never saw it)."""
        return self.turns[-1][1] if self.turns else 0

    def turn_reached_ms(self, position: int) -> int | None:
        """When the served counter reached `position` (Unix ms), if this door knows."""
        at = bisect.bisect_left(self.turns, (position, -1))
        return self.turns[at][1] if at < len(self.turns) else None


def text(value: bytes | str) -> str:
    """A Redis reply string as text."""
    return value.decode() if isinstance(value, bytes) else value


class OrderWatch:
    """Admissions on turns out of the line's order, as one door sees them.

    An admission of position p is late when this door admitted a position
    behind p more than `slack` seconds earlier: the fairness the opening-crush
    scenario checks for the whole deployment (no one admitted more than 2 s
    after someone behind them), counted here per door at no cost.
    """

    def __init__(self, slack: float = 2.0) -> None:
        self._slack = slack
        self._recent: deque[tuple[float, int]] = deque()
        self._settled_max = 0

    def admitted(self, position: int, now: float | None = None) -> bool:
        """Record an admission on a turn; whether it came late."""
        at = time.monotonic() if now is None else now
        while self._recent and self._recent[0][0] < at - self._slack:
            self._settled_max = max(self._settled_max, self._recent.popleft()[1])
        self._recent.append((at, position))
        return self._settled_max > position
