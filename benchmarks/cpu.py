"""CPU time of processes and of the whole machine, from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Process:
    """One process's CPU time so far: its own, and that of its children it has reaped."""

    name: str
    parent: int
    seconds: float
    reaped_children_seconds: float


def processes() -> dict[int, Process]:
    """Every live process, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name may hold spaces and parentheses: split after the last ')'.
        head, _, rest = text.rpartition(")")
        fields = rest.split()
        found[int(entry.name)] = Process(
            head.partition("(")[2], int(fields[1]),
            (int(fields[11]) + int(fields[12])) / _TICK,
            (int(fields[13]) + int(fields[14])) / _TICK)
    return found


def family(snapshot: dict[int, Process], pid: int) -> set[int]:
    """A process and its live children (PostgreSQL's backends are the postmaster's)."""
    return {pid} | {child for child, process in snapshot.items() if process.parent == pid}


def family_seconds(snapshot: dict[int, Process], pid: int) -> float:
    """CPU time of a process, its live children and its reaped children."""
    if pid not in snapshot:
        return 0.0
    live = sum(snapshot[member].seconds for member in family(snapshot, pid))
    return live + snapshot[pid].reaped_children_seconds


@dataclass(frozen=True, slots=True)
class MachineTimes:
    """Jiffies the whole machine spent busy and in all, since boot."""

    busy: int
    total: int

    @classmethod
    def now(cls) -> MachineTimes:
        """Read /proc/stat's first line."""
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        # user, nice, system, irq, softirq; not idle, iowait, nor steal (the hypervisor's).
        busy = values[0] + values[1] + values[2] + values[5] + values[6]
        return cls(busy, sum(values[:8]))  # guest time is already counted in user

    def busy_since(self, earlier: MachineTimes) -> tuple[float, float]:
        """CPU seconds the machine was busy since `earlier`, and the share of all cores."""
        busy, total = self.busy - earlier.busy, self.total - earlier.total
        return busy / _TICK, busy / total if total else 0.0
