"""One registrant in the waiting room, as the form behaves there (opening-crush, issue 18).

The door's side is docs/waiting-room.md; this is the form's, as the issue
words it, in the style of the open-loop applicant (`loadtest/applicant.py`):

- POST the registration with one Idempotency-Key (per tab);
- a 429 or 503 carrying a `queue` object is a place in line: keep the newest
  `ticket`, and poll its `status_url` after `poll_after_seconds`, give or
  take a fifth (never sooner than a second); a poll's own 429/503 is asked
  again no sooner than its Retry-After;
- `your_turn`: send the same body and key again with `Authorization: Queue
  <ticket>`; a 202, a 409 `ticket_used` or a `registered` ticket ends it
  (the last two carry the registration id, another tab's doing);
- `expired` (or 410, or 403 `invalid_ticket`): join again, by sending the
  registration without the ticket;
- a refusal without a `queue` object, or no answer: the form's own retry
  (`retry_delay`: never sooner than Retry-After, plus a share of a doubling
  back-off), same key.

A share of registrants (`Scenario.tabs_share`, 5 %) open three tabs: three
copies of the same applicant at once, same body, each tab with its own
Idempotency-Key, as separate tabs would have; all must end with one and
the same registration.

Each registrant leaves one `Journey` in the records (`Recorder.journey`):
arrival, the first ETA shown and the first with a place in line, the
position and ticket id, when the registration was admitted and its id,
the polls and their latencies. Nothing personal: no body, no NIK.
"""

from __future__ import annotations

import enum
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import gevent  # type: ignore[import-untyped]

from loadtest.applicant import JSON_HEADERS, MAX_TRIES, documented_503, retry_after, retry_delay
from loadtest.generator import Submission
from loadtest.journeys import Journey, Ticket
from loadtest.recorder import Recorder
from loadtest.scenarios import Scenario

POST_NAME: Final = "POST /v1/registrations"
POLL_NAME: Final = "GET /v1/queue/tickets/{ticket}"
# The form never polls more often than this, whatever the door advises.
MIN_POLL_SECONDS: Final = 1.0
POLL_JITTER: Final = 0.2
TABS: Final = 3
# A bound for a door that never moves the line: the page time bounds it first
# at any poll interval of a second or more.
MAX_QUEUE_POLLS: Final = 2_000
WAITING_STATES: Final = ("prequeue", "waiting")


class Step(enum.Enum):
    """What a tab does next."""

    SEND = "send"
    POLL = "poll"
    DONE = "done"


@dataclass(frozen=True)
class Next:
    """The next step, after `wait` seconds."""

    step: Step
    wait: float = 0.0


DONE: Final = Next(Step.DONE)


@dataclass
class Tab:
    """One tab's own state: its Idempotency-Key and the newest ticket it holds."""

    key: str
    ticket: Ticket | None = None
    sends: int = 0
    polls: int = 0


class WaitingRoomForm:
    """The applicants of one Locust process, in the waiting room."""

    def __init__(self, scenario: Scenario, recorder: Recorder,
                 sleep: Callable[[float], object] = gevent.sleep,
                 rng: random.Random | None = None) -> None:
        self.scenario = scenario
        self.recorder = recorder
        # Injected by the tests: a sleep that only notes the wait, a seeded draw.
        self.sleep = sleep
        self.rng = rng or random.Random()

    def apply(self, client: Any, submission: Submission) -> None:
        """One registrant, in one tab or three, until registered or the page is left."""
        arrived = time.time()
        self.recorder.count("offered", at=arrived)
        journey = Journey(submission.idempotency_key, arrived)
        leave_at = time.monotonic() + self.scenario.page_seconds
        try:
            if self.rng.random() < self.scenario.tabs_share:
                journey.tabs = TABS
                self.recorder.count("tabs", at=arrived)
                self._tabs(client, submission, journey, leave_at)
            else:
                self._tab(client, submission.body, Tab(submission.idempotency_key), journey,
                          leave_at)
        finally:
            # Also when the run cuts the applicant off: an unfinished journey is
            # a registrant lost to the report.
            self.recorder.journey(journey.record())

    def _tabs(self, client: Any, submission: Submission, journey: Journey,
              leave_at: float) -> None:
        key = submission.idempotency_key
        keys = [key, *(f"{key}-t{n}" for n in range(2, TABS + 1))]
        tabs = [gevent.spawn(self._guarded_tab, client, submission.body, Tab(k), journey,
                             leave_at) for k in keys]
        try:
            gevent.joinall(tabs)
        finally:
            gevent.killall(tabs)

    def _guarded_tab(self, client: Any, body: bytes, tab: Tab, journey: Journey,
                     leave_at: float) -> None:
        try:
            self._tab(client, body, tab, journey, leave_at)
        except Exception as exc:
            # As Relay._guarded: counted, named by type only (a message could quote a body).
            self.recorder.count("errors")
            print(f"surge: tab failed: {type(exc).__name__}", file=sys.stderr)

    def _tab(self, client: Any, body: bytes, tab: Tab, journey: Journey,
             leave_at: float) -> None:
        """Send, poll, send with the ticket: until done, out of tries or the page is left."""
        step = Next(Step.SEND)
        while step.step is not Step.DONE:
            if step.wait > 0:
                if time.monotonic() + step.wait > leave_at:
                    self.recorder.count("abandoned")
                    return
                self.sleep(step.wait)
            if step.step is Step.SEND:
                if tab.sends >= MAX_TRIES:
                    self.recorder.count("abandoned")
                    return
                step = self._send(client, body, tab, journey)
            else:
                if tab.polls >= MAX_QUEUE_POLLS:
                    self.recorder.count("abandoned")
                    return
                step = self._poll(client, tab, journey)

    # ---- POST /v1/registrations ----

    def _send(self, client: Any, body: bytes, tab: Tab, journey: Journey) -> Next:
        tab.sends += 1
        headers = {**JSON_HEADERS, "Idempotency-Key": tab.key}
        if tab.ticket is not None:
            headers["Authorization"] = f"Queue {tab.ticket['ticket']}"
            self.recorder.count("turns")
        elif tab.sends > 1:
            self.recorder.count("retries")
        sent_at = time.time()
        started = time.perf_counter()
        with client.post("/v1/registrations", data=body, headers=headers, name=POST_NAME,
                         catch_response=True) as reply:
            latency_ms = (time.perf_counter() - started) * 1000
            self.recorder.status(reply.status_code)
            if reply.status_code == 202:
                reply.success()
                registration_id = str(reply.json()["registration_id"])
                journey.admitted(registration_id, sent_at, tab.ticket)
                self.recorder.admitted(registration_id, latency_ms, sent_at)
                return DONE
            return self._judge_send(reply, tab, journey, sent_at)

    def _judge_send(self, reply: Any, tab: Tab, journey: Journey, sent_at: float) -> Next:
        status, recorder = reply.status_code, self.recorder
        if status == 0:  # no answer: the form's network retry, same key and ticket
            recorder.count("errors", at=sent_at)
            reply.failure("no answer")
            return Next(Step.SEND, retry_delay(tab.sends - 1, 0.0, self.rng.random()))
        payload = _json(reply)
        code, queue = _error_code(payload), payload.get("queue")
        if status == 409 and code == "ticket_used":
            reply.success()
            recorder.count("tickets_used", at=sent_at)
            journey.registered(queue.get("registration_id") if isinstance(queue, dict) else None)
            return DONE
        if status == 410 or (status == 403 and code == "invalid_ticket"):
            return self._ticket_refused(reply, status, tab, journey, sent_at)
        if status in (429, 503):
            return self._refused(reply, queue, tab, journey, sent_at)
        recorder.count("unexpected_5xx" if status >= 500 else "errors", at=sent_at)
        reply.failure(f"status {status}")
        return DONE

    def _refused(self, reply: Any, queue: object, tab: Tab, journey: Journey,
                 sent_at: float) -> Next:
        """A 429 or 503: a place in line when it carries one, else the form's retry."""
        recorder, status = self.recorder, reply.status_code
        if status == 503 and not documented_503(reply):
            recorder.count("unexpected_5xx", at=sent_at)
            reply.failure("503 without a documented code")
            return DONE
        reply.success()  # an expected answer under load
        after = retry_after(reply, 0.0)
        if isinstance(queue, dict) and queue.get("ticket"):
            recorder.count("queued", at=sent_at)
            return self._ticket(queue, tab, journey, turn_wait=max(MIN_POLL_SECONDS, after))
        recorder.count("limited" if status == 429 else "shed", at=sent_at)
        return Next(Step.SEND, retry_delay(tab.sends - 1, after, self.rng.random()))

    def _ticket_refused(self, reply: Any, status: int, tab: Tab, journey: Journey,
                        sent_at: float) -> Next:
        """410 `ticket_expired` (expected: join again) or 403 `invalid_ticket` (a door fault)."""
        if status == 410:
            reply.success()
        else:
            self.recorder.count("invalid_tickets", at=sent_at)
            reply.failure("invalid_ticket")
        return self._rejoin(tab, journey)

    # ---- GET status_url ----

    def _poll(self, client: Any, tab: Tab, journey: Journey) -> Next:
        ticket = tab.ticket
        if ticket is None:  # not reached: a tab polls only with a ticket
            return Next(Step.SEND)
        tab.polls += 1
        sent_at = time.time()
        started = time.perf_counter()
        with client.get(_path(str(ticket["status_url"])), headers=JSON_HEADERS, name=POLL_NAME,
                        catch_response=True) as reply:
            journey.polled((time.perf_counter() - started) * 1000)
            self.recorder.count("queue_polls", at=sent_at)
            return self._judge_poll(reply, ticket, tab, journey, sent_at)

    def _judge_poll(self, reply: Any, ticket: Ticket, tab: Tab, journey: Journey,
                    sent_at: float) -> Next:
        status, recorder = reply.status_code, self.recorder
        if status == 200:
            reply.success()
            return self._ticket(reply.json(), tab, journey, turn_wait=0.0)
        if status == 410:  # its turn passed, it was skipped, or its wave is over
            reply.success()
            return self._rejoin(tab, journey)
        if status == 409:  # `ticket_used`: another tab's registration took the turn
            reply.success()
            journey.registered(_json(reply).get("queue", {}).get("registration_id"))
            return DONE
        if status == 403:
            recorder.count("invalid_tickets", at=sent_at)
            reply.failure("invalid_ticket")
            return self._rejoin(tab, journey)
        if status in (429, 503):
            recorder.count("queue_polls_refused", at=sent_at)
            reply.success()
            return Next(Step.POLL, max(MIN_POLL_SECONDS, retry_after(reply, 0.0),
                                       self._poll_wait(ticket)))
        if status == 0:
            recorder.count("errors", at=sent_at)
            reply.failure("no answer")
            return Next(Step.POLL, self._poll_wait(ticket))
        recorder.count("unexpected_5xx" if status >= 500 else "errors", at=sent_at)
        reply.failure(f"status {status}")
        return DONE

    # ---- the ticket's state ----

    def _ticket(self, ticket: Ticket, tab: Tab, journey: Journey, turn_wait: float) -> Next:
        """Keep the newest ticket and act on its state."""
        tab.ticket = ticket
        journey.saw(ticket, time.time())
        state = ticket.get("state")
        if state == "your_turn":
            return Next(Step.SEND, turn_wait)
        if state == "registered":
            journey.registered(ticket.get("registration_id"))
            return DONE
        if state == "expired":
            return self._rejoin(tab, journey)
        return Next(Step.POLL, self._poll_wait(ticket))

    def _rejoin(self, tab: Tab, journey: Journey) -> Next:
        """Drop the ticket and send the registration again without it: a new place."""
        tab.ticket = None
        journey.rejoins += 1
        self.recorder.count("rejoins")
        return Next(Step.SEND)

    def _poll_wait(self, ticket: Ticket) -> float:
        """The advised interval give or take a fifth, never under a second."""
        advised = float(ticket.get("poll_after_seconds") or MIN_POLL_SECONDS)
        share = 1 - POLL_JITTER + 2 * POLL_JITTER * self.rng.random()
        return max(MIN_POLL_SECONDS, advised * share)


def _json(reply: Any) -> dict[str, Any]:
    """The answer's JSON object, or an empty one (no body, HTML from a proxy)."""
    try:
        payload = reply.json()
    except (ValueError, TypeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _error_code(payload: dict[str, Any]) -> str | None:
    error = payload.get("error")
    return str(error.get("code")) if isinstance(error, dict) else None


def _path(status_url: str) -> str:
    """The path (and query) of a status URL, relative or absolute."""
    parts = urlsplit(status_url)
    return parts.path + (f"?{parts.query}" if parts.query else "")
