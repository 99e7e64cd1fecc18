"""One registrant's way through the waiting room, as the opening-crush records it.

Written by the applicant (loadtest/waiting_room.py), one per registrant over all
their tabs, and read by the report (loadtest/fairness.py, loadtest/report.py).
Nothing personal: no body, no NIK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A ticket object as the door answers it (docs/waiting-room.md).
Ticket = dict[str, Any]


@dataclass
class Journey:
    """One registrant's way through the line, over all their tabs."""

    registrant: str              # the first tab's Idempotency-Key: an id of the run's own
    arrived_at: float
    tabs: int = 1
    joined_at: float | None = None
    prequeue: bool = False       # the first ticket was a pre-queue one (the lottery)
    first_eta: tuple[float, float] | None = None
    placed_at: float | None = None
    placed_eta: tuple[float, float] | None = None  # the first ETA with a position
    poll_after: float | None = None                # the first interval advised
    position: int | None = None
    ticket_ids: set[str] = field(default_factory=set)
    admitted_at: float | None = None               # when the POST answered 202 was sent
    registration_ids: list[str] = field(default_factory=list)
    accepted: int = 0                              # 202 answers over all tabs
    polls: int = 0
    poll_ms: list[float] = field(default_factory=list)
    rejoins: int = 0

    def saw(self, ticket: Ticket, at: float) -> None:
        """A ticket object shown at `at` (a POST's `queue`, or a poll's answer)."""
        position = ticket.get("position")
        if self.joined_at is None:
            self.joined_at = at
            self.prequeue = ticket.get("state") == "prequeue"
            advised = ticket.get("poll_after_seconds")
            self.poll_after = float(advised) if advised is not None else None
        eta = ticket.get("eta_seconds")
        if isinstance(eta, dict) and eta.get("p50") is not None:
            pair = (float(eta["p50"]), float(eta.get("p90") or eta["p50"]))
            if self.first_eta is None:
                self.first_eta = pair
            if self.placed_eta is None and position is not None:
                self.placed_eta, self.placed_at = pair, at
        if position is not None:
            self.position = int(position)
        if ticket.get("ticket_id"):
            self.ticket_ids.add(str(ticket["ticket_id"]))

    def admitted(self, registration_id: str, at: float, ticket: Ticket | None) -> None:
        """A 202: its position is the one of the ticket it was sent with."""
        self.accepted += 1
        self.registration_ids.append(registration_id)
        self.admitted_at = at if self.admitted_at is None else min(self.admitted_at, at)
        if ticket is not None and ticket.get("position") is not None:
            self.position = int(ticket["position"])

    def registered(self, registration_id: object) -> None:
        """Another tab's registration, learnt from a 409 `ticket_used` or a poll."""
        if registration_id:
            self.registration_ids.append(str(registration_id))

    def polled(self, latency_ms: float) -> None:
        self.polls += 1
        self.poll_ms.append(round(latency_ms, 2))

    def record(self) -> dict[str, Any]:
        """JSON-ready, for the records (`Recorder.journey`)."""
        return {"registrant": self.registrant, "tabs": self.tabs,
                "arrived_at": round(self.arrived_at, 3), "joined_at": _round(self.joined_at),
                "prequeue": self.prequeue,
                "first_eta": list(self.first_eta) if self.first_eta else None,
                "placed_at": _round(self.placed_at),
                "placed_eta": list(self.placed_eta) if self.placed_eta else None,
                "poll_after": self.poll_after, "position": self.position,
                "ticket_ids": sorted(self.ticket_ids), "admitted_at": _round(self.admitted_at),
                "registration_ids": sorted(set(self.registration_ids)),
                "accepted": self.accepted, "polls": self.polls, "poll_ms": self.poll_ms,
                "rejoins": self.rejoins}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
