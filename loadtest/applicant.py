"""One simulated applicant at the public web form, as intake/web/form.js behaves.

Each arrival is an applicant of its own (a greenlet), so the arrivals never
wait for answers: a door that refuses or answers slowly gets the same
arrival pressure, as on the opening day. What the form does, and so what
an applicant does here:

- POST with one Idempotency-Key, kept across every retry (at most 40 tries);
- on 429/503 or no answer, send the same request again after the form's
  `retryDelay` (intake/web/form-base.js): never sooner than the Retry-After
  (at least 1 s, at most 600), plus a random share of a back-off that starts
  at 2 s and doubles per try up to 30 s, so a wave told the same Retry-After
  does not come back in the same second;
- after a 202 poll the status at once, then every 2 s while `queued`, every
  5 s while a check is `pending` or `sent`, 5 s after a 404, and no sooner
  than `max(5, Retry-After)` s after a 503/429, each wait give or take a
  fifth (as the form's `again`); at most 200 polls.

A person does not keep the page open for ever: an applicant retries and
polls for `Scenario.page_seconds` after arriving, then leaves (a retry it
gave up on counts as `abandoned`).
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

import gevent  # type: ignore[import-untyped]

from loadtest.generator import Submission
from loadtest.mailbox import Mailbox
from loadtest.recorder import DOCUMENTED_503, Recorder
from loadtest.scenarios import Scenario

JSON_HEADERS: Final = {"Content-Type": "application/json", "Accept": "application/json"}
# form.js's figures (seconds), kept beside the names it uses.
# retryDelay's BACKOFF: base, cap, floor, retryAfterCap; and MAX_TRIES.
BACKOFF_BASE: Final = 2.0
BACKOFF_CAP: Final = 30.0
RETRY_FLOOR: Final = 1.0
RETRY_AFTER_CAP: Final = 600.0
MAX_TRIES: Final = 40
POLL_QUEUED: Final = 2.0               # again(2000) while queued
POLL_OPEN: Final = 5.0                 # again(5000) while a check is pending or sent
POLL_BUSY_MIN: Final = 5.0             # again(max(5000, Retry-After * 1000))
POLLS: Final = 200
OPEN_CHECKS: Final = ("pending", "sent")


@dataclass
class Form:
    """What every applicant of one Locust process shares."""

    scenario: Scenario
    recorder: Recorder
    mailbox: Mailbox | None
    # Applicants who will open their link, oldest first: (registration id, not before).
    to_verify: deque[tuple[str, float]] = field(default_factory=deque)

    def apply(self, client: Any, submission: Submission) -> None:
        """One applicant, from the first POST until the page is closed."""
        leave_at = time.monotonic() + self.scenario.page_seconds
        registration_id = self._submit(client, submission, leave_at, first=True)
        if submission.double_submit and registration_id is not None:
            again = self._submit(client, submission, leave_at, first=False)
            if again is not None and again != registration_id:
                self.recorder.count("idempotency_mismatch")
        if registration_id is None:
            return
        if random.random() < self.scenario.verify_share:
            self.to_verify.append((registration_id, time.monotonic() + 2.0))
        if random.random() < self.scenario.poll_share:
            self._follow(client, registration_id, leave_at)

    def _submit(self, client: Any, submission: Submission, leave_at: float,
                first: bool) -> str | None:
        """POST until answered for good or the page is left; the id of a 202, else None."""
        recorder = self.recorder
        headers = {**JSON_HEADERS, "Idempotency-Key": submission.idempotency_key}
        attempt = 0
        while True:
            attempt += 1
            if first and attempt == 1:
                recorder.count("offered")
            elif attempt > 1:
                recorder.count("retries")
            sent_at = time.time()
            started = time.perf_counter()
            # The body goes as the bytes the generator made (the stub says str).
            with client.post("/v1/registrations", data=submission.body, headers=headers,
                             name="POST /v1/registrations", catch_response=True) as reply:
                latency_ms = (time.perf_counter() - started) * 1000
                status = reply.status_code
                recorder.status(status)
                wait = self._judge_post(reply, submission, sent_at)
                if status == 202:
                    registration_id = str(reply.json()["registration_id"])
                    if first:
                        recorder.admitted(registration_id, latency_ms, sent_at)
                    return registration_id
            if wait is None:
                return None
            if attempt >= MAX_TRIES:
                recorder.count("abandoned", at=sent_at)
                return None
            wait = retry_delay(attempt - 1, wait, random.random())
            if time.monotonic() + wait > leave_at:
                recorder.count("abandoned", at=sent_at)
                return None
            gevent.sleep(wait)

    def _judge_post(self, reply: Any, submission: Submission, sent_at: float) -> float | None:
        """Record one POST's answer; the Retry-After the form's retry honours (0 for
        none), or None when the form does not retry."""
        recorder, status = self.recorder, reply.status_code
        if status == 202:
            reply.success()
            return None
        if status == 0:  # no answer (refused, reset, timed out): the form's network retry
            recorder.count("errors", at=sent_at)
            reply.failure("no answer")
            return 0.0
        if status in (429, 503):
            recorder.count("limited" if status == 429 else "shed", at=sent_at)
            if status == 503 and not documented_503(reply):
                recorder.count("unexpected_5xx", at=sent_at)
                reply.failure("503 without a documented code")
                return None
            reply.success()  # an expected answer under load
            return retry_after(reply, 0.0)
        if status == submission.expected_status and status in (400, 422):
            recorder.count("rejected", at=sent_at)
            expected = submission.expected_fields
            fields = reply.json()["error"].get("fields") if status == 422 else None
            if expected is not None and fields != expected:
                recorder.count("contract_mismatch", at=sent_at)
                reply.failure("422 fields differ from the contract")
            else:
                reply.success()
            return None
        recorder.count("unexpected_5xx" if status >= 500 else "errors", at=sent_at)
        reply.failure(f"status {status}")
        return None

    def _follow(self, client: Any, registration_id: str, leave_at: float) -> None:
        """Poll the status as the form's status view does, until settled or left."""
        for _ in range(POLLS):
            with client.get(f"/v1/registrations/{registration_id}",
                            name="GET /v1/registrations/{id}", headers=JSON_HEADERS,
                            catch_response=True) as reply:
                self.recorder.count("polls")
                wait = self._judge_poll(reply)
            if wait is None:
                return
            wait *= 0.8 + 0.4 * random.random()  # tabs of one wave do not poll in step
            if time.monotonic() + wait > leave_at:
                return
            gevent.sleep(wait)

    def _judge_poll(self, reply: Any) -> float | None:
        """Seconds until the form asks again, or None when it stops."""
        status = reply.status_code
        if status == 200:
            reply.success()
            state = reply.json()
            if state.get("state") == "queued":
                return POLL_QUEUED
            checks = (state.get("email_verification"), state.get("nik_verification"))
            return POLL_OPEN if any(check in OPEN_CHECKS for check in checks) else None
        if status == 404:
            reply.success()
            return POLL_OPEN
        if status == 0:
            reply.failure("no answer")
            return POLL_OPEN
        if status == 429 or documented_503(reply):
            # The door sheds reads first when it is busy: expected, counted.
            self.recorder.count("reads_unavailable")
            reply.success()
            return max(POLL_BUSY_MIN, retry_after(reply, 0.0))
        reply.failure(f"status {status}")
        return None

    def open_a_verification_link(self, client: Any) -> None:
        """Click the oldest due link whose email has arrived."""
        if self.mailbox is None or not self.to_verify:
            return
        registration_id, not_before = self.to_verify[0]
        if time.monotonic() < not_before:
            return
        link = self.mailbox.link_for(registration_id)
        if link is None:
            # Not delivered yet: look again later, behind the others.
            self.to_verify.rotate(-1)
            return
        self.to_verify.popleft()
        with client.get(link, name="GET /v1/verify-email", headers={"Accept": "text/html"},
                        catch_response=True) as reply:
            if reply.status_code == 200:
                self.recorder.count("verified_links")
                reply.success()
            elif reply.status_code == 503 and reply.headers.get("Retry-After"):
                # The busy page (HTML, so no code to read): the person clicks
                # again after Retry-After.
                self.recorder.count("reads_unavailable")
                self.to_verify.append(
                    (registration_id, time.monotonic() + retry_after(reply, 1.0)))
                reply.success()
            else:
                reply.failure(f"status {reply.status_code}")


def retry_delay(attempt: int, retry_after_seconds: float, share: float) -> float:
    """Seconds before try `attempt` + 2, as the form's retryDelay: the Retry-After
    (floored, capped) plus `share` (0..1, random) of the doubling back-off."""
    wait = min(RETRY_AFTER_CAP, max(RETRY_FLOOR, retry_after_seconds))
    backoff: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt, 16))
    return wait + share * backoff


def retry_after(reply: Any, default: float) -> float:
    """The Retry-After header in seconds, as parseInt reads it; `default` when absent."""
    text = str(reply.headers.get("Retry-After") or "").strip()
    digits = text[:len(text) - len(text.lstrip("0123456789"))] if text else ""
    return float(digits) if digits else default


def documented_503(reply: Any) -> bool:
    """A 503 with Retry-After and one of the contract's codes."""
    if reply.status_code != 503 or not reply.headers.get("Retry-After"):
        return False
    try:
        return reply.json()["error"]["code"] in DOCUMENTED_503
    except (ValueError, KeyError, TypeError):
        return False
