"""The figures of `gelombang status`: read from the admin port, turned into rates.

/metrics (no token, not audited) gives the backlog per partition, the policy
in force, the breaker reports and this pod's admission counters; the process
reports (token; an identical read is audited once per window) give every
door and worker process's counters, from which the admission rates of the
whole deployment are made (gelombang/status_fleet.py); the funnel (token,
audited) gives stored counts and dead letters, so it is read less often.
Rates are differences between two readings over the time between them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from gelombang.status_fleet import SHED_OUTCOMES, ProcessRow, totals

FUNNEL_PATH: Final = "/admin/v1/funnel"
PROCESSES_PATH: Final = "/admin/v1/processes"
WAVES_PATH: Final = "/admin/v1/waves"


@dataclass(frozen=True, slots=True)
class Reading:
    """What the admin port said at one moment."""

    at: float
    decisions: dict[str, float]
    backlog: dict[str, float]
    policy: dict[str, float]
    breakers: dict[str, bool]
    funnel: dict[str, Any] | None = None
    # GET /admin/v1/processes's rows, as the admin port gave them.
    processes: list[dict[str, Any]] | None = None
    # GET /admin/v1/waves (the waiting room); None from a door without it.
    waves: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Verification:
    """The verification side from two funnel readings: pace, what waits, time to clear."""

    emails_per_second: float
    nik_checks_per_second: float
    emails_waiting: int
    nik_checks_waiting: int

    @staticmethod
    def _clear(waiting: int, per_second: float) -> float | None:
        if waiting <= 0:
            return 0.0
        return waiting / per_second if per_second > 0 else None

    @property
    def emails_clear_seconds(self) -> float | None:
        """Seconds until every waiting email is sent at this pace (None: not moving)."""
        return self._clear(self.emails_waiting, self.emails_per_second)

    @property
    def nik_checks_clear_seconds(self) -> float | None:
        """Seconds until every waiting NIK is checked at this pace (None: not moving)."""
        return self._clear(self.nik_checks_waiting, self.nik_checks_per_second)


def verification_between(now: dict[str, Any], before: dict[str, Any],
                         seconds: float) -> Verification:
    """Emails sent and NIKs checked per second between two funnels, and what waits now
    (accepted registrations not yet sent, not yet checked)."""
    def checked(funnel: dict[str, Any]) -> int:
        return int(funnel.get("nik_verified", 0)) + int(funnel.get("nik_rejected", 0))

    accepted = int(now.get("accepted", 0))
    sent = int(now.get("email_sent", 0))
    return Verification(
        max(0, sent - int(before.get("email_sent", 0))) / seconds,
        max(0, checked(now) - checked(before)) / seconds,
        max(0, accepted - sent), max(0, accepted - checked(now)))


@dataclass(frozen=True, slots=True)
class Frame:
    """One view's worth of figures."""

    policy: dict[str, float]
    backlog: dict[str, float]
    breakers: dict[str, bool]
    funnel: dict[str, Any] | None
    admitted_per_second: float | None = None
    limited_per_second: float | None = None
    shed_per_second: float | None = None
    drained_per_second: float | None = None
    problems: list[str] = field(default_factory=list)
    verification: Verification | None = None
    processes: list[ProcessRow] = field(default_factory=list)
    # The waiting room: the scheduled waves and the line in force (GET /admin/v1/waves).
    waves: dict[str, Any] | None = None


def parse_metrics(text: str) -> Reading:
    """The figures the view needs out of the Prometheus text."""
    decisions: dict[str, float] = {}
    backlog: dict[str, float] = {}
    policy: dict[str, float] = {}
    breakers: dict[str, bool] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gelombang_admission_decisions_total":
                outcome = sample.labels["outcome"]
                decisions[outcome] = decisions.get(outcome, 0.0) + sample.value
            elif sample.name == "gelombang_backlog_entries":
                backlog[sample.labels["partition"]] = sample.value
            elif sample.name == "gelombang_breaker_open":
                breakers[f"{sample.labels['service']}:{sample.labels['worker']}"] = (
                    sample.value == 1)
            elif sample.name.startswith("gelombang_admission_") and not sample.labels:
                policy[sample.name.removeprefix("gelombang_admission_")] = sample.value
    return Reading(time.monotonic(), decisions, backlog, policy, breakers)


async def read_admin(session: aiohttp.ClientSession, url: str, token: str, *,
                     with_funnel: bool) -> Reading:
    """One reading of /metrics, the process reports and the waiting room, and of the
    funnel when asked (raises on a refusal)."""
    async with session.get(url + "/metrics") as response:
        response.raise_for_status()
        reading = parse_metrics(await response.text())
    processes = (await _read_json(session, url + PROCESSES_PATH, token))["processes"]
    funnel = await _read_json(session, url + FUNNEL_PATH, token) if with_funnel else None
    waves = await _read_json_if_served(session, url + WAVES_PATH, token)
    return Reading(reading.at, reading.decisions, reading.backlog, reading.policy,
                   reading.breakers, funnel, processes, waves)


async def _read_json(session: aiohttp.ClientSession, url: str, token: str) -> dict[str, Any]:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        response.raise_for_status()
        body: dict[str, Any] = orjson.loads(await response.read())
        return body


async def _read_json_if_served(session: aiohttp.ClientSession, url: str,
                               token: str) -> dict[str, Any] | None:
    """The JSON body, or None where the door answers 404 (a door older than the route)."""
    try:
        return await _read_json(session, url, token)
    except aiohttp.ClientResponseError as exc:
        if exc.status == 404:
            return None
        raise


def _rate(now: dict[str, float], before: dict[str, float], names: tuple[str, ...],
          seconds: float) -> float:
    # A counter that went down is a restarted door: count from zero, not negative.
    return sum(max(0.0, now.get(n, 0.0) - before.get(n, 0.0)) for n in names) / seconds


def make_frame(now: Reading, before: Reading | None, funnel_before: Reading | None) -> Frame:
    """The view's figures: `before` for the admission rates, `funnel_before` for draining."""
    return dataclasses.replace(_rates(now, before, funnel_before), waves=now.waves)


def _rates(now: Reading, before: Reading | None, funnel_before: Reading | None) -> Frame:
    frame = Frame(now.policy, now.backlog, now.breakers, now.funnel)
    if before is not None and now.at > before.at:
        seconds = now.at - before.at
        frame = Frame(
            now.policy, now.backlog, now.breakers, now.funnel,
            admitted_per_second=_rate(now.decisions, before.decisions, ("admitted",), seconds),
            limited_per_second=_rate(now.decisions, before.decisions, ("limited",), seconds),
            shed_per_second=_rate(now.decisions, before.decisions, SHED_OUTCOMES, seconds),
        )
    if (now.funnel is not None and funnel_before is not None
            and funnel_before.funnel is not None and now.at > funnel_before.at):
        seconds = now.at - funnel_before.at
        stored = now.funnel["stored"] - funnel_before.funnel["stored"]
        return Frame(frame.policy, frame.backlog, frame.breakers, frame.funnel,
                     frame.admitted_per_second, frame.limited_per_second,
                     frame.shed_per_second, max(0, stored) / seconds,
                     verification=verification_between(now.funnel, funnel_before.funnel,
                                                       seconds))
    return frame


def with_processes(frame: Frame, rows: list[ProcessRow]) -> Frame:
    """The frame with every process's row; its admission rates become the deployment's
    (summed over every door process's reports) once a door has reported twice."""
    doors = totals(rows).get("door")
    if doors is None:
        # No door reports yet (or doors older than the reports): this pod's /metrics.
        return dataclasses.replace(frame, processes=rows)
    return dataclasses.replace(frame, processes=rows, admitted_per_second=doors["admitted"],
                               limited_per_second=doors["limited"],
                               shed_per_second=doors["shed"])
