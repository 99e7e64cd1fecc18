"""Locust surge: applicants arriving at the public web form on the scenario's schedule.

Run through `gelombang surge SCENARIO` (loadtest/surge_command.py), which
sets the scenario (`GELOMBANG_SURGE`), the records folder
(`GELOMBANG_SURGE_OUT`) and the mail sink's folder (`GELOMBANG_MAILDIR`).

A Locust user here is a source of arrivals, not a browser: it takes the
next submission from the workload generator (valid applicants,
duplicates, invalid forms, double submits) and starts an applicant of its
own for it (`loadtest/applicant.py`, which behaves as intake/web/form.js),
then waits for its next arrival (a fixed pace). So the shape's
user count sets the arrival rate, and no answer, however slow or refusing,
holds an arrival back. Records go to the master (`loadtest/relay.py`).
In `opening-crush` the applicant is the form in the waiting room
(`loadtest/waiting_room.py`), and the schedule runs on the wall clock from
the wave's pre-queue (`Scenario.starts_at`): users started earlier wait for it.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import gevent  # type: ignore[import-untyped]
from locust import LoadTestShape, events, task
from locust.contrib.fasthttp import FastHttpUser

from loadtest.applicant import Form
from loadtest.generator import Mix, SurgeGenerator
from loadtest.mailbox import Mailbox
from loadtest.recorder import Recorder
from loadtest.relay import Relay
from loadtest.scenarios import Scenario
from loadtest.waiting_room import WaitingRoomForm

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


_out = os.environ.get("GELOMBANG_SURGE_OUT")
_maildir = os.environ.get("GELOMBANG_MAILDIR")
RECORDER = Recorder()
RELAY = Relay(SCENARIO, RECORDER, Path(_out) if _out else None)
FORM = Form(SCENARIO, RECORDER, Mailbox(Path(_maildir)) if _maildir else None)
APPLY = (WaitingRoomForm(SCENARIO, RECORDER).apply if SCENARIO.name == "opening-crush"
         else FORM.apply)

events.init.add_listener(RELAY.attach)  # type: ignore[no-untyped-call]
events.test_start.add_listener(RELAY.on_test_start)  # type: ignore[no-untyped-call]
events.test_stop.add_listener(RELAY.on_test_stop)  # type: ignore[no-untyped-call]


class Applicants(FastHttpUser):
    """A source of applicants: one arrival every 1 / per_user_rate seconds."""

    # Answers within the door's budget or a clear error: never wait forever.
    network_timeout = 10.0
    connection_timeout = 5.0
    # The applicants a source started share its connections, as many at once
    # as are likely in flight (a few seconds' worth of its arrivals).
    concurrency = 20
    # When this source's next arrival is due (time.monotonic()).
    next_arrival = 0.0

    def on_start(self) -> None:
        # A schedule on the wall clock (opening-crush) may not have begun yet.
        gevent.sleep(max(0.0, -RELAY.elapsed()))
        # Users start in batches; a random first arrival within one interval
        # spreads them over it instead of all at once.
        self.next_arrival = time.monotonic() + random.random() / SCENARIO.per_user_rate
        gevent.sleep(self.next_arrival - time.monotonic())

    def wait_time(self) -> float:
        """Until the next arrival: a fixed pace from this source's own first one.

        Not Locust's `constant_throughput`: it counts from the user's creation,
        so the random first delay above would count as the first task's run
        time and every user would arrive in step from the second arrival on
        (seen as all of a step-ramp's arrivals in every other second).
        """
        self.next_arrival += 1 / SCENARIO.per_user_rate
        return max(0.0, self.next_arrival - time.monotonic())

    @task
    def arrive(self) -> None:
        if RELAY.schedule_over():
            # Locust stops users a tick later, and a user must not offer an
            # application the scenario did not ask for.
            gevent.sleep(1.0)
            return
        RELAY.arrive(APPLY, self.client, generator().next())
        if FORM.to_verify:
            RELAY.also(FORM.open_a_verification_link, self.client)


class SurgeShape(LoadTestShape):
    """Users for the scenario's arrival rate, second by second, then the run's end."""

    last: tuple[int, float] = (1, 50.0)

    def tick(self) -> tuple[int, float] | None:
        run_time: float = (RELAY.elapsed() if SCENARIO.starts_at
                           else self.get_run_time())  # type: ignore[no-untyped-call]
        users = SCENARIO.users_at(run_time)
        if users is not None:
            # Start (or stop) users quickly: the rate, not the spawn, is the schedule.
            self.last = (users, max(50.0, users * 2.0))
            return self.last
        # Over: the users offer nothing more; wait for the applicants to leave
        # and every worker's last records (loadtest/relay.py).
        return None if RELAY.finished(run_time - SCENARIO.total_seconds) else self.last
