"""How `gelombang status` draws a frame: rich tables, no personal data (none is read)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gelombang.status_fleet import RATES, ProcessRow, totals
from gelombang.status_sample import Frame

# The funnel's counters in the contract's order (docs/api.md, GET /admin/v1/funnel).
FUNNEL_ORDER: Final = ("queued", "stored", "accepted", "duplicate", "ineligible", "email_sent",
                       "email_verified", "nik_verified", "nik_rejected", "dead_letter")


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if value != int(value) else f"{int(value):,}"


def _admission(frame: Frame) -> Table:
    table = Table(title="Admission", title_justify="left", show_header=False, expand=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    policy = frame.policy
    state = "open" if policy.get("open", 1) == 1 else "CLOSED"
    limiting = "" if policy.get("enabled", 1) == 1 else " (limiting off)"
    table.add_row("rate in force", f"{_number(policy.get('rate_per_second'))} /s{limiting}")
    table.add_row("burst", _number(policy.get("burst")))
    table.add_row("intake", Text(state, style="green" if state == "open" else "bold red"))
    table.add_row("admitted /s", _number(frame.admitted_per_second))
    table.add_row("limited (429) /s", _number(frame.limited_per_second))
    table.add_row("shed (503) /s", _number(frame.shed_per_second))
    return table


def _queue(frame: Frame) -> Table:
    table = Table(title="Queue", title_justify="left", show_header=False, expand=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("backlog", _number(sum(frame.backlog.values())))
    table.add_row("drained (stored) /s", _number(frame.drained_per_second))
    dead = None if frame.funnel is None else frame.funnel.get("dead_letter")
    table.add_row("dead letters", Text(_number(dead), style="bold red" if dead else ""))
    opened = [name for name, is_open in frame.breakers.items() if is_open]
    if not frame.breakers:
        breaker = Text("no reports", style="dim")
    elif opened:
        breaker = Text(f"OPEN ({len(opened)} of {len(frame.breakers)})", style="bold red")
    else:
        breaker = Text(f"closed ({len(frame.breakers)} workers)", style="green")
    table.add_row("NIK API breaker", breaker)
    return table


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not moving"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _verification(frame: Frame) -> Table:
    table = Table(title="Verification", title_justify="left", expand=False)
    table.add_column("")
    table.add_column("per second", justify="right")
    table.add_column("waiting", justify="right")
    table.add_column("clears in", justify="right")
    pace = frame.verification
    if pace is None:
        table.add_row("email", "-", "-", "-")
        table.add_row("NIK", "-", "-", "-")
        return table
    table.add_row("email", _number(pace.emails_per_second), _number(pace.emails_waiting),
                  _duration(pace.emails_clear_seconds))
    table.add_row("NIK", _number(pace.nik_checks_per_second), _number(pace.nik_checks_waiting),
                  _duration(pace.nik_checks_clear_seconds))
    return table


def _partitions(frame: Frame) -> Table:
    table = Table(title="Backlog per partition", title_justify="left", expand=False)
    table.add_column("partition", justify="right")
    table.add_column("entries", justify="right")
    for partition, entries in sorted(frame.backlog.items(), key=lambda item: int(item[0])):
        table.add_row(partition, _number(entries))
    return table


def _funnel(frame: Frame) -> Table:
    table = Table(title="Funnel", title_justify="left", show_header=False, expand=False)
    table.add_column("counter")
    table.add_column("count", justify="right")
    for name in FUNNEL_ORDER:
        value = None if frame.funnel is None else frame.funnel.get(name)
        table.add_row(name, _number(value))
    return table


def _waiting_room(frame: Frame) -> Table:
    """The line in force: its wave and phase, length, counters, release rate, last ETA."""
    table = Table(title="Waiting room", title_justify="left", show_header=False, expand=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    if frame.waves is None:
        table.add_row("line", Text("no reading", style="dim"))
        return table
    line = frame.waves.get("in_force") or {}
    enabled = frame.waves.get("enabled", True)
    wave = str(line.get("wave", "-")) + ("" if enabled else " (tickets off)")
    table.add_row("wave in force", wave)
    table.add_row("phase", str(line.get("phase", "-")))
    table.add_row("waiting", _number(line.get("waiting")))
    if line.get("phase") == "prequeue":
        table.add_row("in the pre-queue", _number(line.get("prequeue")))
    table.add_row("served / tail", f"{_number(line.get('served'))} / {_number(line.get('tail'))}")
    table.add_row("drawn", _number(line.get("drawn")))
    table.add_row("tickets expired", _number(line.get("expired")))
    table.add_row("tickets used", _number(line.get("used")))
    table.add_row("release rate", f"{_number(line.get('release_rate'))} /s")
    eta = line.get("eta_last_seconds")
    table.add_row("last person served in", _duration(None if eta is None else float(eta)))
    upcoming = [w for w in frame.waves.get("waves", []) if w.get("phase") == "scheduled"]
    if upcoming:
        table.add_row("next wave", f"{upcoming[0]['wave']} at {upcoming[0]['prequeue_from']}")
    return table


def _rates_text(role: str, rates: Mapping[str, float] | None) -> str:
    if rates is None:
        return "-"
    return " · ".join(f"{name} {_number(rates.get(name, 0.0))}" for name in RATES.get(role, {}))


def _processes(rows: list[ProcessRow]) -> Table:
    """One row per process that reported, then each role's total over its fresh ones."""
    table = Table(title="Processes (per second)", title_justify="left", expand=False)
    table.add_column("role")
    table.add_column("process")
    table.add_column("last report", justify="right")
    table.add_column("per second")
    for row in rows:
        age = Text(f"{row.age_seconds:.0f} s ago STALE", style="bold red") if row.stale \
            else Text(f"{row.age_seconds:.0f} s ago")
        table.add_row(row.role, f"{row.name} (pid {row.pid})", age,
                      "-" if row.stale else _rates_text(row.role, row.rates))
    summed = totals(rows)
    for role in RATES:
        fresh = sum(1 for row in rows if row.role == role and not row.stale)
        if fresh:
            table.add_row(Text(role, style="bold"), Text(f"total of {fresh}", style="bold"), "",
                          Text(_rates_text(role, summed.get(role)), style="bold"))
    if not rows:
        table.add_row("-", Text("no process reports", style="dim"), "", "")
    return table


def render_frame(frame: Frame, heading: str) -> RenderableType:
    """The whole view: admission, queue and verification side by side, then partitions,
    funnel and the waiting room, then every process."""
    top = Table.grid(padding=(0, 4))
    top.add_row(_admission(frame), _queue(frame), _verification(frame))
    bottom = Table.grid(padding=(0, 4))
    bottom.add_row(_partitions(frame), _funnel(frame), _waiting_room(frame))
    parts: list[RenderableType] = [Text(heading, style="bold"), top, bottom,
                                   _processes(frame.processes)]
    parts.extend(Text(problem, style="bold red") for problem in frame.problems)
    return Group(*parts)
