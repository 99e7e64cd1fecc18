"""Surge scenarios: the arrival rate QA wants at each second of a run.

A scenario is an arrival rate over time. The shape
(`loadtest/locustfile.py`) turns it into a user count: every user is a
source of arrivals at `per_user_rate` a second (`constant_throughput`), and
each arrival is an applicant of its own that does not hold the user up
(open loop: arrivals do not wait for answers, so a slow or refusing door
does not slow the arrivals down). `rate / per_user_rate` users produce
`rate` arrivals a second. The report compares the arrivals achieved with
`planned_arrivals()`, and a run short of the plan fails.

A scenario's parameters travel to Locust's processes in one environment
variable (`GELOMBANG_SURGE`, JSON), so the master and every worker compute
the same schedule.

`opening-crush` (issue 18) is the waiting room's: N registrants arrive
evenly over the first `duration` s (2 minutes) of a wave whose pre-queue
opens at second 0 and which opens at `opens_after` (minute 1), against an
admission rate of N/200 a second; each behaves as the form in the waiting
room (`loadtest/waiting_room.py`), a share with three tabs open. Its clock
is the wall clock (`starts_at`, the pre-queue's opening), not Locust's
start, so every process arrives in step with the wave the door was told.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Final

ENV: Final = "GELOMBANG_SURGE"
# The 2020 opening: 80,000 registrations in one minute.
OPENING_RATE_PER_SECOND: Final = 80_000 / 60
# Share of applicants who opened their verification link, 21 hours after the
# 2020 opening (reported by the programme).
VERIFY_SHARE: Final = 0.7385
# opening-crush: N on one 2-core machine (300,000 at production scale needs the
# distributed surge), and the admission rate as a share of N: the whole line
# is released in ADMISSION_SECONDS.
CRUSH_REGISTRANTS: Final = 30_000
CRUSH_ADMISSION_SECONDS: Final = 200.0
CRUSH_ARRIVAL_SECONDS: Final = 120.0
CRUSH_OPENS_AFTER: Final = 60.0
CRUSH_TABS_SHARE: Final = 0.05
# How long a crush applicant keeps the page open beyond the line's whole
# length (the opening, then N / admission rate, twice over): room for a turn
# missed by a slow poll and a rejoin.
CRUSH_PAGE_MARGIN: Final = 120.0


@dataclass(frozen=True)
class Scenario:
    """One surge: what to offer, for how long, and how the load behaves."""

    name: str
    rate: float = OPENING_RATE_PER_SECOND   # arrivals per second at the plateau
    duration: float = 60.0                 # the plateau (soak, retry-storm: the whole run)
    ramp: float = 30.0                     # opening-wave: seconds from 0 to `rate`
    decay: float = 30.0                    # opening-wave: seconds from `rate` back to 0
    start_rate: float = 0.0                # step-ramp: the first step (0: one step's worth)
    steps: int = 8                         # step-ramp: how many steps up to `rate`
    admission_rate: float = 50.0           # retry-storm: admission set this low meanwhile
    per_user_rate: float = 0.5             # applications per second per Locust user
    # How long an applicant keeps the form's page open: it retries a 429/503
    # and polls its status (as intake/web/form.js does) until then.
    page_seconds: float = 20.0
    # Applicants in flight per Locust process: the generator's bound. An
    # arrival beyond it is not offered (and the run falls short of its plan).
    max_in_flight: int = 20_000
    verify_share: float = VERIFY_SHARE     # applicants who open their verification link
    poll_share: float = 1.0                # applicants who poll their status URL once
    duplicate_share: float = 0.02
    invalid_share: float = 0.02
    double_submit_share: float = 0.01
    # opening-crush (see `opening_crush`): the registrants (N), the pre-queue's
    # length before the opening, the share who open three tabs, the wave's
    # name, and its second 0 as Unix seconds (0: when Locust starts).
    registrants: int = 0
    opens_after: float = 0.0
    tabs_share: float = 0.0
    wave: str = ""
    starts_at: float = 0.0

    @classmethod
    def opening_crush(cls, registrants: int = CRUSH_REGISTRANTS, *,
                      duration: float = CRUSH_ARRIVAL_SECONDS,
                      opens_after: float = CRUSH_OPENS_AFTER,
                      admission_rate: float | None = None,
                      page_seconds: float | None = None,
                      max_in_flight: int | None = None,
                      tabs_share: float = CRUSH_TABS_SHARE,
                      per_user_rate: float = 0.5) -> Scenario:
        """The waiting room's crush: N arrive over `duration` s, admitted at N/200 a second.

        Every applicant is a valid registrant of their own (no duplicates,
        invalid forms or double submits: one NIK is one place, and the
        exactly-once check counts people), who stays on the page until
        admitted; nobody polls their status or opens a link afterwards.
        """
        if registrants < 1:
            raise ValueError("opening-crush needs at least one registrant")
        admission = admission_rate or registrants / CRUSH_ADMISSION_SECONDS
        page = page_seconds or (opens_after + 2 * registrants / admission + CRUSH_PAGE_MARGIN)
        # Everyone is in flight at once: the pre-queue holds them all, and a
        # tabbed applicant holds two more greenlets of its own.
        in_flight = max_in_flight or max(1_000, math.ceil(registrants * 1.25))
        return cls("opening-crush", rate=registrants / duration, duration=duration,
                   admission_rate=admission, per_user_rate=per_user_rate,
                   page_seconds=page, max_in_flight=in_flight, verify_share=0.0,
                   poll_share=0.0, duplicate_share=0.0, invalid_share=0.0,
                   double_submit_share=0.0, registrants=registrants,
                   opens_after=opens_after, tabs_share=tabs_share)

    def rate_at(self, t: float) -> float | None:
        """Arrivals per second wanted at second `t` of the run; None once it is over."""
        if t < 0:
            return 0.0
        if self.name == "opening-wave":
            if t < self.ramp:
                return self.rate * t / self.ramp if self.ramp > 0 else self.rate
            t -= self.ramp
            if t < self.duration:
                return self.rate
            t -= self.duration
            if t < self.decay:
                return self.rate * (1 - t / self.decay)
            return None
        if self.name == "step-ramp":
            step = int(t // self.duration)
            if step >= self.steps:
                return None
            first = self.start_rate or self.rate / self.steps
            return first + (self.rate - first) * step / max(1, self.steps - 1)
        if self.name in ("soak", "retry-storm", "opening-crush"):
            return self.rate if t < self.duration else None
        raise ValueError(f"unknown scenario {self.name!r}")

    @property
    def total_seconds(self) -> float:
        """How long the run lasts."""
        if self.name == "opening-wave":
            return self.ramp + self.duration + self.decay
        if self.name == "step-ramp":
            return self.steps * self.duration
        return self.duration

    def users_at(self, t: float) -> int | None:
        """Locust users for the rate at `t` (at least one while the run lasts)."""
        rate = self.rate_at(t)
        if rate is None:
            return None
        return max(1, math.ceil(rate / self.per_user_rate))

    def planned_arrivals(self) -> float:
        """Arrivals the schedule asks for over the whole run (the rate integrated)."""
        # The midpoint rule is exact on a linear ramp; a step or an end that
        # falls inside a tenth of a second is off by at most that tenth.
        step = 0.1
        ticks = math.ceil(self.total_seconds / step)
        return sum(self.rate_at((i + 0.5) * step) or 0.0 for i in range(ticks)) * step

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Scenario:
        """The scenario the surge command put in the environment (default: the wave)."""
        raw = os.environ.get(ENV)
        if not raw:
            return cls("opening-wave")
        fields: dict[str, Any] = json.loads(raw)
        return cls(**fields)


SCENARIOS: Final = ("opening-wave", "step-ramp", "soak", "retry-storm", "opening-crush")


def parse_rate(text: str) -> float:
    """`1333`, `1333/s` or `80000/min` → arrivals per second."""
    value, _, unit = text.strip().partition("/")
    per = {"": 1.0, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}.get(unit.strip())
    if per is None:
        raise ValueError(f"rate unit must be /s, /min or /h, not {unit!r}")
    rate = float(value) / per
    if rate <= 0:
        raise ValueError("the rate must be positive")
    return rate
