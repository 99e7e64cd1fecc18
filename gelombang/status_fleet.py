"""The deployment's processes in `gelombang status`: per-process rates and their totals.

Each door and worker process writes its counters to Redis every few seconds
(queueing/process_reports.py) and GET /admin/v1/processes returns them all.
A rate is one process's counter difference between two of its own reports,
over the time between those reports: never a difference of totals, which
drop when a process stops and jump when one starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

# Outcomes the door answers 503 for: the request was shed, not rate limited.
SHED_OUTCOMES: Final = ("backlog_full", "closed", "unavailable", "overloaded")
# The rates shown per role, each the sum of some of the process's counters.
RATES: Final[Mapping[str, Mapping[str, tuple[str, ...]]]] = {
    "door": {"admitted": ("admitted",), "limited": ("limited",), "shed": SHED_OUTCOMES,
             "email_verified": ("email_verified",)},
    "drain": {"stored": ("stored",)},
    "email": {"sent": ("sent",)},
    "nik": {"checked": ("verified", "mismatch", "not_found")},
}


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """One process as the view shows it; `rates` is None until it reported twice."""

    role: str
    name: str
    host: str
    pid: int
    age_seconds: float
    stale: bool
    rates: Mapping[str, float] | None


def _rates(role: str, now: Mapping[str, float], before: Mapping[str, float],
           seconds: float) -> dict[str, float]:
    # A counter that went down is a restarted process under the same name: from zero.
    return {name: sum(max(0.0, now.get(c, 0.0) - before.get(c, 0.0)) for c in counters) / seconds
            for name, counters in RATES.get(role, {}).items()}


class FleetRates:
    """Memory between readings: each process's last distinct report and its last rates."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, Mapping[str, float]]] = {}
        self._rates: dict[str, dict[str, float]] = {}

    def update(self, processes: Sequence[Mapping[str, Any]]) -> list[ProcessRow]:
        """The rows for one reading of GET /admin/v1/processes."""
        rows = []
        for process in processes:
            name, role = str(process["name"]), str(process["role"])
            at, counters = float(process["reported_at"]), process["counters"]
            last = self._last.get(name)
            if last is None or at > last[0]:
                if last is not None:
                    self._rates[name] = _rates(role, counters, last[1], at - last[0])
                self._last[name] = (at, counters)
            rows.append(ProcessRow(role, name, str(process["host"]), int(process["pid"]),
                                   float(process["age_seconds"]), bool(process["stale"]),
                                   self._rates.get(name)))
        # Processes that left the reading leave the memory too.
        seen = {row.name for row in rows}
        for name in set(self._last) - seen:
            del self._last[name]
            self._rates.pop(name, None)
        return rows


def totals(rows: Sequence[ProcessRow]) -> dict[str, dict[str, float]]:
    """Each role's rates summed over its fresh processes that have a rate."""
    summed: dict[str, dict[str, float]] = {}
    for row in rows:
        if row.stale or row.rates is None:
            continue
        role = summed.setdefault(row.role, {})
        for name, value in row.rates.items():
            role[name] = role.get(name, 0.0) + value
    return summed
