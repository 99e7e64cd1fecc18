"""The waiting room's counters: tickets by event, Redis round trips by kind, the wait
from joining to admission, and admissions out of the line's order.

Counted locally on the hot path and flushed with the door's other metrics
(intake/metrics.py); the line's own gauges are read at scrape time from the door's
copy of the line (`metrics.line_figures`).
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

from intake.metrics import LocalCounter, LocalHistogram, flush
from queueing.line_view import OrderWatch
from queueing.queue_tickets import Ticket

_QUEUE_EVENTS = Counter(
    "gelombang_queue_tickets_total",
    "Waiting room tickets by event: issued (a join answered with a place), used (a"
    " registration admitted on its turn), polled, left, invalid (forged or another NIK's),"
    " reused (a used ticket shown again).",
    ["event"],
)
_QUEUE_REDIS_CALLS = Counter(
    "gelombang_queue_redis_calls_total",
    "Redis round trips made for the waiting room, by kind: tick (the line read, twice a"
    " tick), join, lookup (a drawn pre-queue ticket's first poll, a poll at the front),"
    " claim, registered, leave, release; joins, look-ups, claims and records are grouped"
    " (one round trip for all that waited). Polls of waiting tickets make none.",
    ["kind"],
)
_QUEUE_LATE = Counter(
    "gelombang_queue_late_admissions_total",
    "Admissions on a turn that came more than 2 s after this door admitted someone behind"
    " them in the line (fairness: 0 when turns are taken in order).",
)
QUEUE_WAIT_SECONDS = Histogram(
    "gelombang_queue_wait_seconds",
    "From joining the waiting room's line to being admitted on one's turn.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)

_QUEUE_COUNTERS = {event: LocalCounter(_QUEUE_EVENTS.labels(event))
                   for event in ("issued", "used", "polled", "left", "invalid", "reused")}
_QUEUE_CALL_COUNTERS = {kind: LocalCounter(_QUEUE_REDIS_CALLS.labels(kind)) for kind in (
    "tick", "join", "lookup", "claim", "registered", "leave", "release")}
QUEUE_WAIT = LocalHistogram(QUEUE_WAIT_SECONDS)
QUEUE_LATE = LocalCounter(_QUEUE_LATE)


def count_queue_calls(kind: str, calls: int) -> None:
    """Count Redis round trips made for the waiting room (gelombang_queue_redis_calls_total)."""
    _QUEUE_CALL_COUNTERS[kind].inc(calls)


def queue_redis_calls() -> float:
    """Every Redis round trip made for the waiting room so far, all kinds (after a flush)."""
    flush()
    return sum(float(_QUEUE_REDIS_CALLS.labels(kind)._value.get())
               for kind in _QUEUE_CALL_COUNTERS)


def count_queue_event(event: str) -> None:
    """Count one waiting room event (see gelombang_queue_tickets_total)."""
    _QUEUE_COUNTERS[event].inc()


def flushed_count(event: str) -> float:
    """A waiting room event's count as prometheus-client holds it (after a flush)."""
    flush()
    return float(_QUEUE_EVENTS.labels(event)._value.get())


def admitted_on_turn(ticket: Ticket, order: OrderWatch) -> None:
    """Count a registration admitted on its turn: used, its wait, and whether it was late."""
    _QUEUE_COUNTERS["used"].inc()
    QUEUE_WAIT.observe(max(0.0, time.time() - ticket.joined_at))
    if order.admitted(ticket.position):
        QUEUE_LATE.inc()
