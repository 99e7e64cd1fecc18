"""opening-crush's set-up and the door's readings: the wave, the admission rate, /metrics, CPU.

Before the load the surge command schedules the crush's wave through the
admin API (`PUT /admin/v1/waves/{wave}`, docs/waiting-room.md): its pre-queue
opens `WAVE_LEAD_SECONDS` from now, which is the schedule's second 0 (the
Locust processes arrive on the wall clock from it, `Scenario.starts_at`), it
opens `opens_after` s later, and joining closes once the last arrival's page
time is over (a wave past `closes_at` is no longer the one in force). The
admission rate is set to N/200 a second (`PUT /admin/v1/admission`) and put
back afterwards, as the retry storm does.

Around the load it reads the door: the waiting room's counters on the admin
port's /metrics (`gelombang_queue_redis_calls_total`,
`gelombang_queue_tickets_total{event="polled"}`: Redis round trips made for tickets and the
polls answered), the request histogram of the ticket routes (the door's own
p99), and the CPU time of the door processes when they run on this machine
(`/admin/v1/processes` names their pids). Whatever is missing is reported as
not measured, never guessed.
"""

from __future__ import annotations

import datetime
import math
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Protocol

from loadtest.preflight import SurgeCannotStart
from loadtest.scenarios import Scenario

# From scheduling the wave to its pre-queue's opening: Locust starts meanwhile
# (its workers, with --workers, take a few seconds to fork and connect).
WAVE_LEAD_SECONDS: Final = 15.0
# Joining closes this long after the last arrival's page time is over.
CLOSE_MARGIN_SECONDS: Final = 60.0
REDIS_CALLS: Final = "gelombang_queue_redis_calls_total"
# The door counts polls among its ticket events: the series with event="polled".
QUEUE_POLLS: Final = "gelombang_queue_tickets_total"
POLLED: Final = ("event", "polled")
REQUEST_BUCKETS: Final = "gelombang_http_request_duration_seconds_bucket"
# The request histogram's routes read for the door's p99: the waiting room's.
TICKET_ROUTE: Final = re.compile(r"ticket|queue", re.IGNORECASE)
_SAMPLE: Final = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL: Final = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
TIMEOUT: Final = 10.0

Labels = tuple[tuple[str, str], ...]


class Admin(Protocol):
    """What the crush needs of the surge command's endpoints."""

    @property
    def admin(self) -> str | None: ...

    def admin_request(self, method: str, path: str, body: dict[str, Any] | None = None
                      ) -> tuple[int, Any]: ...


@dataclass(frozen=True)
class Wave:
    """The crush's wave as scheduled (Unix seconds)."""

    name: str
    prequeue_from: int
    opens_at: int
    closes_at: int

    def as_dict(self) -> dict[str, Any]:
        return {"wave": self.name, "prequeue_from": self.prequeue_from,
                "opens_at": self.opens_at, "closes_at": self.closes_at}


def plan_wave(scenario: Scenario, now: float, name: str | None = None) -> Wave:
    """The wave for a crush starting `WAVE_LEAD_SECONDS` after `now`."""
    start = math.ceil(now + WAVE_LEAD_SECONDS)
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y%m%dt%H%M%S")
    return Wave(name or f"crush-{stamp}", start, start + math.ceil(scenario.opens_after),
                start + math.ceil(scenario.duration + scenario.page_seconds
                                  + CLOSE_MARGIN_SECONDS))


def set_up(admin: Admin, scenario: Scenario, wave: Wave) -> Scenario:
    """Set the admission rate to the crush's, then schedule its wave; the scenario anchored
    on the wave. The caller restores the admission settings it read before."""
    rate = scenario.admission_rate
    status, answer = admin.admin_request("PUT", "/admin/v1/admission", {
        "rate_per_second": rate, "burst": max(1, int(rate))})
    if status != 200:
        raise SurgeCannotStart(f"opening-crush could not set the admission rate to {rate:g}/s "
                               f"at {admin.admin} ({_why(status, answer)})")
    body = {key: value for key, value in wave.as_dict().items() if key != "wave"}
    status, answer = admin.admin_request("PUT", f"/admin/v1/waves/{wave.name}", body)
    if status not in (200, 201, 204):
        raise SurgeCannotStart(
            f"opening-crush could not schedule the wave {wave.name} at {admin.admin} "
            f"({_why(status, answer)}): does this door have the waiting room (issue 18)?")
    return replace(scenario, starts_at=float(wave.prequeue_from), wave=wave.name)


def _why(status: int, answer: Any) -> str:
    if status == 0:
        return "no answer"
    error = answer.get("error") if isinstance(answer, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return f"status {status}" + (f", {code}" if code else "")


@dataclass(frozen=True)
class DoorReading:
    """The door's counters and CPU at one moment; None where not measured."""

    samples: dict[str, dict[Labels, float]] | None
    cpu_seconds: dict[int, float] = field(default_factory=dict)


def read_door(admin: Admin) -> DoorReading:
    """/metrics on the admin port (no token) and the local door processes' CPU time."""
    return DoorReading(_metrics(admin.admin), _door_cpu(admin))


def _metrics(base: str | None) -> dict[str, dict[Labels, float]] | None:
    if base is None:
        return None
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=TIMEOUT) as reply:
            text = reply.read().decode("utf-8", "replace")
    except (OSError, ValueError, urllib.error.HTTPError):
        return None
    return parse_metrics(text, (REDIS_CALLS, QUEUE_POLLS, REQUEST_BUCKETS))


def parse_metrics(text: str, names: tuple[str, ...]) -> dict[str, dict[Labels, float]]:
    """The samples of `names` in Prometheus text: name → labels (sorted pairs) → value.

    Request buckets are kept for the waiting room's routes only."""
    found: dict[str, dict[Labels, float]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) not in names:
            continue
        name, raw_labels, raw_value = match.groups()
        labels = tuple(sorted(_LABEL.findall(raw_labels or "")))
        if name == REQUEST_BUCKETS and not TICKET_ROUTE.search(dict(labels).get("route", "")):
            continue
        try:
            value = float(raw_value)
        except ValueError:
            continue
        found.setdefault(name, {})[labels] = value
    return found


def _door_cpu(admin: Admin) -> dict[int, float]:
    """CPU seconds (user + system) of each door process that runs on this machine."""
    status, answer = admin.admin_request("GET", "/admin/v1/processes")
    if status != 200 or not isinstance(answer, dict):
        return {}
    host = socket.gethostname()
    cpu: dict[int, float] = {}
    for process in answer.get("processes", ()):
        if process.get("role") != "door" or process.get("host") != host:
            continue
        seconds = process_cpu_seconds(int(process["pid"]))
        if seconds is not None:
            cpu[int(process["pid"])] = seconds
    return cpu


def process_cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float | None:
    """utime + stime of a process, from /proc/<pid>/stat; None when it cannot be read."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces, within parentheses):
    # state is field 3, utime 14 and stime 15.
    fields = stat[stat.rindex(")") + 2:].split()
    try:
        ticks = int(fields[11]) + int(fields[12])
    except (IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def door_figures(before: DoorReading, after: DoorReading, client_polls: int) -> dict[str, Any]:
    """What the run cost the door: Redis round trips per poll, CPU, the ticket routes' p99."""
    calls = _delta(before, after, REDIS_CALLS)
    polls = _delta(before, after, QUEUE_POLLS)
    figures: dict[str, Any] = {
        "redis_calls": None if calls is None else sum(calls.values()),
        "queue_polls": None if polls is None else sum(
            value for labels, value in polls.items() if POLLED in labels),
        "redis_calls_by_label": None if calls is None else {
            _label_text(labels) or "all": value for labels, value in sorted(calls.items())},
    }
    counted_polls = figures["queue_polls"]
    figures["redis_calls_per_poll"] = (
        round(figures["redis_calls"] / counted_polls, 5)
        if figures["redis_calls"] is not None and counted_polls else None)
    shared = set(before.cpu_seconds) & set(after.cpu_seconds)
    cpu = sum(after.cpu_seconds[pid] - before.cpu_seconds[pid] for pid in shared)
    polls_for_cpu = counted_polls or client_polls
    figures["door_processes_measured"] = len(shared)
    figures["cpu_seconds"] = round(cpu, 2) if shared else None
    figures["cpu_ms_per_poll_at_most"] = (round(cpu * 1000 / polls_for_cpu, 4)
                                          if shared and polls_for_cpu else None)
    figures["ticket_routes"] = _route_p99s(before, after)
    return figures


def _delta(before: DoorReading, after: DoorReading, name: str) -> dict[Labels, float] | None:
    """Each series' increase; None when the door does not expose the metric."""
    if before.samples is None or after.samples is None or name not in after.samples:
        return None
    earlier = before.samples.get(name, {})
    return {labels: value - earlier.get(labels, 0.0)
            for labels, value in after.samples[name].items()}


def _label_text(labels: Labels) -> str:
    return ",".join(f"{key}={value}" for key, value in labels)


def _route_p99s(before: DoorReading, after: DoorReading) -> dict[str, dict[str, Any]]:
    """Per ticket route: answers in the run and the p99's bucket bound (ms)."""
    buckets = _delta(before, after, REQUEST_BUCKETS) or {}
    by_route: dict[str, dict[float, float]] = {}
    for labels, count in buckets.items():
        named = dict(labels)
        bound = math.inf if named.get("le") == "+Inf" else float(named.get("le", "nan"))
        route = by_route.setdefault(named.get("route", "?"), {})
        route[bound] = route.get(bound, 0.0) + count  # summed over statuses
    return {route: _p99_bound(cumulative) for route, cumulative in sorted(by_route.items())}


def _p99_bound(cumulative: Mapping[float, float]) -> dict[str, Any]:
    total = cumulative.get(math.inf, 0.0)
    if total <= 0:
        return {"answers": 0, "p99_ms_at_most": None}
    rank = math.ceil(0.99 * total)
    bounds = sorted(cumulative)
    for bound in bounds:
        if cumulative[bound] >= rank and not math.isinf(bound):
            return {"answers": int(total), "p99_ms_at_most": round(bound * 1000, 3)}
    # Beyond the last finite bucket: over it, by how much the histogram cannot say.
    finite = [bound for bound in bounds if not math.isinf(bound)]
    return {"answers": int(total), "p99_ms_at_most": None,
            "p99_over_ms": round(finite[-1] * 1000, 3) if finite else None}
