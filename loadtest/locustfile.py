"""Locust surge: applicants behaving like the public web form.

Run through `gelombang surge SCENARIO` (loadtest/surge_command.py), which
sets the scenario (`GELOMBANG_SURGE`), the output folder
(`GELOMBANG_SURGE_OUT`) and the mail sink's folder (`GELOMBANG_MAILDIR`).

Each user is one browser after another: it takes the next submission from
the shared workload generator (valid applicants, duplicates, invalid forms,
double submits), POSTs it with an Idempotency-Key, and on 429/503 waits
Retry-After plus up to a second of jitter and sends the same request again
(at most `max_tries` POSTs). After a 202 it polls its status URL once, and a
share of applicants (`verify_share`) later open the link from their email
once the mail sink has it. Users pace themselves with `constant_throughput`
so the shape's user count sets the arrival rate.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import deque
from pathlib import Path
from typing import Any

import gevent  # type: ignore[import-untyped]
from locust import LoadTestShape, constant_throughput, events, task
from locust.contrib.fasthttp import FastHttpUser

from loadtest.generator import Mix, Submission, SurgeGenerator
from loadtest.mailbox import Mailbox
from loadtest.recorder import DOCUMENTED_503, Recorder
from loadtest.scenarios import Scenario

SCENARIO = Scenario.from_env()
_citizen = os.environ.get("GELOMBANG_SURGE_CITIZEN")
MIX = Mix(duplicate_share=SCENARIO.duplicate_share, invalid_share=SCENARIO.invalid_share,
          double_submit_share=SCENARIO.double_submit_share,
          citizen=tuple(json.loads(_citizen)) if _citizen else None)
# One generator per process, made in that process: `--processes` forks the
# workers after this module is imported, and a generator made here would
# hand every worker the same applicants and Idempotency-Keys.
_generators: dict[int, SurgeGenerator] = {}


def generator() -> SurgeGenerator:
    """This process's workload generator."""
    pid = os.getpid()
    if pid not in _generators:
        _generators.clear()
        _generators[pid] = SurgeGenerator(MIX)
    return _generators[pid]

RECORDER = Recorder()
OUT = Path(os.environ["GELOMBANG_SURGE_OUT"]) if os.environ.get("GELOMBANG_SURGE_OUT") else None
_maildir = os.environ.get("GELOMBANG_MAILDIR")
MAILBOX = Mailbox(Path(_maildir)) if _maildir else None
# Applicants who will open their link, oldest first: (registration id, not before).
TO_VERIFY: deque[tuple[str, float]] = deque()
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
# When this process's part of the run began (set on test start).
_started = [time.monotonic()]


def _flush_forever() -> None:
    while True:
        gevent.sleep(2.0)
        _flush()


def _flush() -> None:
    if OUT is not None:
        RECORDER.write(OUT)


def _on_start(environment: Any, **_: Any) -> None:
    _started[0] = time.monotonic()
    if OUT is not None:
        OUT.mkdir(parents=True, exist_ok=True)
        gevent.spawn(_flush_forever)


def _on_quit(environment: Any, **_: Any) -> None:
    _flush()


def _on_stop(environment: Any, **_: Any) -> None:
    _flush()


events.test_start.add_listener(_on_start)  # type: ignore[no-untyped-call]
events.test_stop.add_listener(_on_stop)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_on_quit)  # type: ignore[no-untyped-call]


class Applicant(FastHttpUser):
    """One applicant after another at the web form."""

    wait_time = constant_throughput(SCENARIO.per_user_rate)
    # Answers within the door's budget or a clear error: never wait forever.
    network_timeout = 10.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        # Users start in batches; a random first delay within one interval
        # spreads their arrivals over it instead of all at once.
        gevent.sleep(random.random() / SCENARIO.per_user_rate)

    @task
    def apply(self) -> None:
        if SCENARIO.rate_at(time.monotonic() - _started[0]) is None:
            # The schedule is over: Locust stops users a tick later, and a
            # user must not offer an application the scenario did not ask for.
            gevent.sleep(1.0)
            return
        self._open_a_verification_link()
        submission = generator().next()
        registration_id = self._submit(submission, first=True)
        if submission.double_submit and registration_id is not None:
            again = self._submit(submission, first=False)
            if again is not None and again != registration_id:
                RECORDER.count("idempotency_mismatch")
        if registration_id is None:
            return
        if random.random() < SCENARIO.verify_share:
            TO_VERIFY.append((registration_id, time.monotonic() + 2.0))
        if random.random() < SCENARIO.poll_share:
            gevent.sleep(1.0)
            with self.client.get(f"/v1/registrations/{registration_id}",
                                 name="GET /v1/registrations/{id}", headers=JSON_HEADERS,
                                 catch_response=True) as reply:
                RECORDER.count("polls")
                if reply.status_code in (200, 404):
                    reply.success()
                elif _documented_503(reply):
                    RECORDER.count("reads_unavailable")
                    reply.success()  # the door sheds reads first when it is busy
                else:
                    reply.failure(f"status {reply.status_code}")

    def _submit(self, submission: Submission, first: bool) -> str | None:
        """POST until answered for good; the registration id of a 202, else None."""
        headers = {**JSON_HEADERS, "Idempotency-Key": submission.idempotency_key}
        for attempt in range(1, SCENARIO.max_tries + 1):
            if first and attempt == 1:
                RECORDER.count("offered")
            elif attempt > 1:
                RECORDER.count("retries")
            sent_at = time.time()
            started = time.perf_counter()
            # The body goes as the bytes the generator made (the stub says str).
            with self.client.post("/v1/registrations",
                                  data=submission.body,  # type: ignore[arg-type]
                                  headers=headers, name="POST /v1/registrations",
                                  catch_response=True) as reply:
                latency_ms = (time.perf_counter() - started) * 1000
                status = reply.status_code
                RECORDER.status(status)
                if status == 202:
                    reply.success()
                    registration_id = str(reply.json()["registration_id"])
                    if first:
                        RECORDER.admitted(registration_id, latency_ms, sent_at)
                    return registration_id
                if status in (429, 503):
                    documented = status == 429 or _documented_503(reply)
                    RECORDER.count("limited" if status == 429 else "shed", at=sent_at)
                    if not documented:
                        RECORDER.count("unexpected_5xx", at=sent_at)
                        reply.failure("503 without a documented code")
                        return None
                    reply.success()  # an expected answer under load
                    wait = _retry_after(reply)
                    gevent.sleep(wait + random.random())
                    continue
                if status == submission.expected_status and status in (400, 422):
                    RECORDER.count("rejected", at=sent_at)
                    expected = submission.expected_fields
                    fields = reply.json()["error"].get("fields") if status == 422 else None
                    if expected is not None and fields != expected:
                        RECORDER.count("contract_mismatch", at=sent_at)
                        reply.failure("422 fields differ from the contract")
                    else:
                        reply.success()
                    return None
                RECORDER.count("unexpected_5xx" if status >= 500 else "errors", at=sent_at)
                reply.failure(f"status {status}")
                return None
        return None

    def _open_a_verification_link(self) -> None:
        if MAILBOX is None or not TO_VERIFY:
            return
        registration_id, not_before = TO_VERIFY[0]
        if time.monotonic() < not_before:
            return
        link = MAILBOX.link_for(registration_id)
        if link is None:
            # Not delivered yet: look again later, behind the others.
            TO_VERIFY.rotate(-1)
            return
        TO_VERIFY.popleft()
        with self.client.get(link, name="GET /v1/verify-email",
                             headers={"Accept": "text/html"}, catch_response=True) as reply:
            if reply.status_code == 200:
                RECORDER.count("verified_links")
                reply.success()
            elif reply.status_code == 503 and reply.headers.get("Retry-After"):
                # The busy page (HTML, so no code to read): the person clicks
                # again after Retry-After.
                RECORDER.count("reads_unavailable")
                TO_VERIFY.append((registration_id, time.monotonic() + _retry_after(reply)))
                reply.success()
            else:
                reply.failure(f"status {reply.status_code}")


def _retry_after(reply: Any) -> float:
    try:
        return max(0.0, float(reply.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def _documented_503(reply: Any) -> bool:
    if reply.status_code != 503 or not reply.headers.get("Retry-After"):
        return False
    try:
        return reply.json()["error"]["code"] in DOCUMENTED_503
    except (ValueError, KeyError, TypeError):
        return False


class SurgeShape(LoadTestShape):
    """Users for the scenario's arrival rate, second by second."""

    def tick(self) -> tuple[int, float] | None:
        run_time: float = self.get_run_time()  # type: ignore[no-untyped-call]
        users = SCENARIO.users_at(run_time)
        if users is None:
            return None
        # Start (or stop) users quickly: the rate, not the spawn, is the schedule.
        return users, max(50.0, users * 2.0)
