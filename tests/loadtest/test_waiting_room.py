"""The waiting-room applicant against a scripted door (a real aiohttp server in a thread).

The applicant runs as in Locust (gevent, a blocking client), here in the test's
thread with a sleep that only notes each wait, so the intervals the form
keeps can be checked without waiting for them. Bodies are a placeholder, not
a registrant: nothing shaped like personal data is sent or can be printed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

import gevent  # type: ignore[import-untyped]
import pytest
from aiohttp import web

from loadtest.fairness import exactly_once
from loadtest.generator import Submission
from loadtest.recorder import Recorder
from loadtest.scenarios import Scenario
from loadtest.waiting_room import MIN_POLL_SECONDS, TABS, WaitingRoomForm
from tests.loadtest.scripted_line import (
    BODY,
    KEY,
    Client,
    Handler,
    Run,
    ScriptedDoor,
    Seen,
    queued,
    ticket,
)


@pytest.fixture
def apply() -> Iterator[Callable[..., Run]]:
    doors: list[ScriptedDoor] = []

    def run(handler: Handler, tabs_share: float = 0.0) -> Run:
        door = ScriptedDoor(handler).__enter__()
        doors.append(door)
        waits: list[float] = []

        def noted_sleep(seconds: float) -> None:
            waits.append(seconds)
            gevent.sleep(0)  # other tabs run meanwhile, as they would

        scenario = Scenario.opening_crush(100, tabs_share=tabs_share)
        recorder = Recorder()
        form = WaitingRoomForm(scenario, recorder, sleep=noted_sleep, rng=random.Random(5))
        client = Client(door.port)
        form.apply(client, Submission("valid", BODY, KEY, False, 202, None))
        return Run(door, waits, recorder, client.failures)

    yield run
    for door in doors:
        door.__exit__()


def test_queued_polls_at_the_advised_interval_then_registers_with_the_ticket(
        apply: Callable[..., Run]) -> None:
    async def door(seen: Seen, scripted: ScriptedDoor) -> web.Response:
        if seen.method == "POST" and seen.authorization is None:
            return queued(ticket("T1", eta=(30.0, 45.0)))
        if seen.method == "GET":
            polls = scripted.state["polls"] = scripted.state.get("polls", 0) + 1
            state = "waiting" if polls == 1 else "your_turn"
            return web.json_response(ticket("T1", state=state, eta=(10.0, 15.0)))
        assert seen.authorization == "Queue T1"
        return web.json_response({"registration_id": "R1"}, status=202)

    run = apply(door)
    assert [(s.method, s.path) for s in run.door.seen] == [
        ("POST", "/v1/registrations"), ("GET", "/v1/queue/tickets/T1"),
        ("GET", "/v1/queue/tickets/T1"), ("POST", "/v1/registrations")]
    first, again = run.door.posts()
    # The same body and key again, now with the ticket.
    assert first.key == again.key == KEY and first.body == again.body == BODY
    assert (first.authorization, again.authorization) == (None, "Queue T1")
    # Two polls, each 20 s give or take a fifth; the turn is taken at once.
    assert len(run.waits) == 2 and all(16.0 <= w <= 24.0 for w in run.waits), run.waits
    journey = run.journey
    assert journey["registration_ids"] == ["R1"] and journey["accepted"] == 1
    assert journey["position"] == 7 and journey["ticket_ids"] == ["3f0c" * 8]
    assert journey["first_eta"] == journey["placed_eta"] == [30.0, 45.0]
    assert journey["prequeue"] is False and journey["poll_after"] == 20.0
    assert journey["polls"] == 2 and len(journey["poll_ms"]) == 2
    assert journey["admitted_at"] >= journey["joined_at"] >= journey["arrived_at"]
    assert run.recorder.admitted_ids == ["R1"]
    assert run.recorder.total("queued") == 1 and run.recorder.total("queue_polls") == 2
    assert run.recorder.total("turns") == 1
    assert run.failures == []
    json.dumps(run.recorder.data())  # the records travel as JSON


def test_a_prequeue_ticket_is_replaced_by_the_drawn_one(apply: Callable[..., Run]) -> None:
    async def door(seen: Seen, scripted: ScriptedDoor) -> web.Response:
        if seen.method == "POST" and seen.authorization is None:
            return queued(ticket("P1", state="prequeue", position=None, eta=(60.0, 90.0)))
        if seen.path.endswith("/P1"):  # the draw: a new token with the position
            return web.json_response(ticket("D1", position=5, eta=(12.0, 20.0)))
        if seen.method == "GET":
            return web.json_response(ticket("D1", state="your_turn", position=5))
        assert seen.authorization == "Queue D1"
        return web.json_response({"registration_id": "R5"}, status=202)

    run = apply(door)
    assert [s.path for s in run.door.seen if s.method == "GET"] == [
        "/v1/queue/tickets/P1", "/v1/queue/tickets/D1"]
    journey = run.journey
    assert journey["prequeue"] is True and journey["position"] == 5
    assert journey["first_eta"] == [60.0, 90.0] and journey["placed_eta"] == [12.0, 20.0]
    assert journey["placed_at"] >= journey["joined_at"]
    assert journey["registration_ids"] == ["R5"]


def test_three_tabs_end_with_one_registration(apply: Callable[..., Run]) -> None:
    # One NIK, one place: the door gives every tab the same ticket; its turn
    # comes after three polls in all; the ticket admits one registration.
    async def door(seen: Seen, scripted: ScriptedDoor) -> web.Response:
        used = scripted.state.get("used")
        if seen.method == "POST" and seen.authorization is None:
            return queued(ticket("T1", poll_after=2.0))
        if seen.method == "GET":
            if used:
                return web.json_response(ticket("T1", state="registered",
                                                registration_id=used))
            polls = scripted.state["polls"] = scripted.state.get("polls", 0) + 1
            return web.json_response(ticket("T1", state="your_turn" if polls >= 3
                                            else "waiting", poll_after=2.0))
        if used:
            return web.json_response(
                {"error": {"code": "ticket_used", "message": "used"},
                 "queue": ticket("T1", state="registered", registration_id=used)},
                status=409)
        scripted.state["used"] = "R1"
        return web.json_response({"registration_id": "R1"}, status=202)

    run = apply(door, tabs_share=1.0)
    keys = {s.key for s in run.door.posts()}
    assert len(keys) == TABS and KEY in keys  # a key per tab, the first the generator's
    assert {s.body for s in run.door.posts()} == {BODY}
    journey = run.journey
    assert journey["tabs"] == TABS
    assert journey["registration_ids"] == ["R1"] and journey["accepted"] == 1
    assert run.recorder.admitted_ids == ["R1"]
    assert exactly_once({journey["registrant"]: journey["registration_ids"]}).ok
    assert run.recorder.total("tabs") == 1 and run.recorder.total("offered") == 1
    assert all(w >= MIN_POLL_SECONDS for w in run.waits)
    assert run.failures == []


def test_an_expired_ticket_joins_again_without_it(apply: Callable[..., Run]) -> None:
    async def door(seen: Seen, scripted: ScriptedDoor) -> web.Response:
        if seen.method == "POST" and seen.authorization is None:
            joins = scripted.state["joins"] = scripted.state.get("joins", 0) + 1
            return queued(ticket(f"T{joins}", position=7 if joins == 1 else 9))
        if seen.path.endswith("/T1"):
            return web.json_response(
                {"error": {"code": "ticket_expired", "message": "expired"},
                 "queue": ticket("T1", state="expired", eta=None)}, status=410)
        if seen.method == "GET":
            return web.json_response(ticket("T2", state="your_turn", position=9))
        assert seen.authorization == "Queue T2"
        return web.json_response({"registration_id": "R9"}, status=202)

    run = apply(door)
    posts = run.door.posts()
    assert [s.authorization for s in posts] == [None, None, "Queue T2"]
    assert {s.key for s in posts} == {KEY}
    journey = run.journey
    assert journey["rejoins"] == 1 and journey["position"] == 9
    assert journey["registration_ids"] == ["R9"]
    assert run.failures == []


def test_a_poll_answered_ticket_used_ends_with_that_registration(
        apply: Callable[..., Run]) -> None:
    async def door(seen: Seen, scripted: ScriptedDoor) -> web.Response:
        if seen.method == "POST":
            return queued(ticket("T1", position=7))
        # Another tab of this person registered with the ticket meanwhile.
        return web.json_response(
            {"error": {"code": "ticket_used", "message": "used"},
             "queue": ticket("T1", state="registered", eta=None) | {"registration_id": "R7"}},
            status=409)

    run = apply(door)
    assert run.journey["registration_ids"] == ["R7"]
    assert [s.method for s in run.door.seen] == ["POST", "GET"]
    assert run.failures == []


def test_a_refused_poll_waits_its_retry_after_and_polls_never_come_faster_than_a_second(
        apply: Callable[..., Run]) -> None:
    async def door(seen: Seen, scripted: ScriptedDoor) -> web.Response:
        if seen.method == "POST" and seen.authorization is None:
            return queued(ticket("T1", poll_after=0.2))
        if seen.method == "GET":
            polls = scripted.state["polls"] = scripted.state.get("polls", 0) + 1
            if polls == 1:
                return web.json_response(
                    {"error": {"code": "queue_unavailable", "message": "busy"}}, status=503,
                    headers={"Retry-After": "7"})
            return web.json_response(ticket("T1", state="your_turn", poll_after=0.2))
        # Registered already (e.g. an answer lost on the way): the ticket says so.
        return web.json_response(
            {"error": {"code": "ticket_used", "message": "used"},
             "queue": ticket("T1", state="registered", registration_id="R3")}, status=409)

    run = apply(door)
    assert run.waits[0] == MIN_POLL_SECONDS  # 0.2 s advised: a second at the least
    assert run.waits[1] >= 7.0                # the poll's own Retry-After
    journey = run.journey
    assert journey["registration_ids"] == ["R3"] and journey["accepted"] == 0
    assert run.recorder.total("queue_polls_refused") == 1
    assert run.recorder.total("tickets_used") == 1
    assert run.recorder.admitted_ids == []


def test_a_refusal_without_a_place_is_retried_as_the_form_retries(
        apply: Callable[..., Run]) -> None:
    async def door(seen: Seen, scripted: ScriptedDoor) -> web.Response:
        if len(scripted.seen) == 1:  # Redis away: no ticket could be issued
            return web.json_response(
                {"error": {"code": "admission_limited", "message": "busy"}}, status=429,
                headers={"Retry-After": "3"})
        return web.json_response({"registration_id": "R2"}, status=202)

    run = apply(door)
    assert [s.key for s in run.door.posts()] == [KEY, KEY]
    assert [s.authorization for s in run.door.posts()] == [None, None]
    assert len(run.waits) == 1 and run.waits[0] >= 3.0
    assert run.journey["position"] is None and run.journey["joined_at"] is None
    assert run.journey["registration_ids"] == ["R2"]
    assert run.recorder.total("limited") == 1 and run.recorder.total("retries") == 1


def test_journeys_reach_the_master_with_the_other_records() -> None:
    worker, master = Recorder(), Recorder()
    worker.journey({"registrant": "k1", "registration_ids": ["R1"]})
    master.absorb(worker.take(), source="worker-1")
    assert worker.journeys == []
    assert master.journeys == [{"registrant": "k1", "registration_ids": ["R1"]}]


@pytest.mark.parametrize("tabs_share", [0.0, 1.0])
def test_an_applicant_cut_off_in_line_is_recorded_as_not_admitted(tabs_share: float) -> None:
    async def door(seen: Seen, scripted: ScriptedDoor) -> web.Response:
        if seen.method == "POST":
            return queued(ticket("T1"))
        return web.json_response(ticket("T1"))

    recorder = Recorder()
    form = WaitingRoomForm(Scenario.opening_crush(100, tabs_share=tabs_share), recorder,
                           sleep=lambda seconds: gevent.sleep(0), rng=random.Random(5))
    with ScriptedDoor(door) as scripted:
        applicant = gevent.spawn(form.apply, Client(scripted.port),
                                 Submission("valid", BODY, KEY, False, 202, None))
        for _ in range(20):
            gevent.sleep(0)
        assert not applicant.dead  # still polling: its turn never comes
        applicant.kill()  # as Relay.cut_off does at the run's end
    [journey] = recorder.journeys
    assert journey["registration_ids"] == [] and journey["admitted_at"] is None
    assert journey["polls"] > 0 and journey["position"] == 7
