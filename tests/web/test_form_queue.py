"""The form in the waiting room (docs/waiting-room.md), in headless Chromium.

As tests/web/test_form_retries.py: a scripted stand-in door serves the real
page and answers from scripts each test sets, here POST /v1/registrations and
the ticket's GET (each script's last answer repeating), with DELETE recorded.
It keeps of every request its method, answer, Authorization, the ticket in
its URL, Idempotency-Key, arrival time and a digest of its body, never the
body, so a failure prints no personal data. No Redis or PostgreSQL: these
tests are about the page.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Page

from intake.form_rules import ERROR_MESSAGES, QUEUE_MESSAGES, SEND_MESSAGES
from intake.pages import add_page_routes, form_page
from loadtest.registrants import RegistrantFactory
from tests.web.browser import chromium_page, fill_form
from tests.web.queue_door import (
    ACCEPT,
    DROP,
    EARLIER_ID,
    ELSEWHERE,
    FIRST,
    JAKARTA,
    KEY_SHAPE,
    PERSONAL,
    REGISTRATION_ID,
    SECOND,
    SLACK_S,
    Call,
    ScriptedDoor,
    polled,
    queued,
    refused,
    ticket,
)


@pytest.fixture
async def door() -> AsyncIterator[ScriptedDoor]:
    app = web.Application()
    add_page_routes(app.router, form_page(), prefix="/", name="form")
    scripted = ScriptedDoor()
    app.router.add_post("/v1/registrations", scripted.register)
    app.router.add_get("/v1/registrations/{id}", scripted.status)
    app.router.add_get("/v1/queue/tickets/{ticket}", scripted.poll)
    app.router.add_delete("/v1/queue/tickets/{ticket}", scripted.leave)
    server = TestServer(app)
    await server.start_server(access_log=None)
    scripted.url = str(server.make_url("/"))
    try:
        yield scripted
    finally:
        await server.close()


async def open_and_send(page: Page, door: ScriptedDoor, registrants: RegistrantFactory,
                        ) -> dict[str, Any]:
    person = registrants.make().body()
    await page.goto(door.url)
    # Every text the live region takes, in order.
    await page.evaluate("""() => {
        window.announced = [];
        const notice = document.getElementById('notice');
        new MutationObserver(() => window.announced.push(notice.textContent))
            .observe(notice, {childList: true, characterData: true, subtree: true});
    }""")
    await fill_form(page, person)
    await page.click("#submit")
    return person


async def announced(page: Page) -> list[str]:
    texts: list[str] = await page.evaluate("window.announced")
    return [text for i, text in enumerate(texts) if i == 0 or text != texts[i - 1]]


async def notice_is(page: Page, text: str) -> None:
    await page.wait_for_function(
        "text => document.getElementById('notice').textContent === text", arg=text)


async def stored_place(page: Page) -> str:
    """Everything the tab keeps in sessionStorage, as one JSON text."""
    stored: str = await page.evaluate("JSON.stringify(Object.entries(sessionStorage))")
    return stored


def gaps(calls: list[Call]) -> list[float]:
    return [later.at - earlier.at for earlier, later in itertools.pairwise(calls)]


def one_key(posts: list[Call]) -> None:
    keys = {post.key for post in posts}
    assert len(keys) == 1, "every send of one filled form carries the same Idempotency-Key"
    assert KEY_SHAPE.fullmatch(keys.pop())
    assert len({post.body for post in posts}) == 1, "every send carries the same body"


async def test_a_queued_registration_waits_its_turn_and_is_sent_again_with_the_ticket(
    door: ScriptedDoor, registrants: RegistrantFactory,
) -> None:
    door.posts = [queued(ticket(FIRST, poll_after=2)), ACCEPT]
    door.polls = [
        polled(ticket(FIRST, ahead=3, eta=(130, 290), poll_after=2)),
        polled(ticket(SECOND, ahead=1, poll_after=1)),  # a new token: the newest is used
        polled(ticket(SECOND, "your_turn", turn_valid_until="2026-12-07T03:05:00Z")),
    ]
    async with chromium_page() as page:
        await open_and_send(page, door, registrants)
        await page.wait_for_selector("#queue-position:text('1.234')")
        shown = {name: await page.text_content(f"#queue-{name}")
                 for name in ("state", "position", "ahead", "eta", "next")}
        hidden_form = await page.is_hidden("#registration")
        countdown_outside = await page.evaluate(
            "document.getElementById('queue-next').closest('[aria-live], [role=status]')"
            " === null")
        await page.wait_for_selector("#queue-eta:text('perkiraan 2 \u2013 5 menit')")
        await page.wait_for_selector('#status-state[data-state="accepted"]')
        said = await announced(page)
        status_id = await page.text_content("#status-id")
        left_in_storage = await stored_place(page)

    assert re.fullmatch(r"Pemeriksaan berikutnya dalam [23] detik\.", shown.pop("next") or "")
    assert shown == {
        "state": "Menunggu giliran", "position": "1.234",
        "ahead": "1.180 orang di depan Anda", "eta": "perkiraan 1 \u2013 2 menit",
    }
    assert hidden_form and countdown_outside
    posts, polls = door.of("POST"), door.of("GET")
    assert [post.auth for post in posts] == ["", f"Queue {SECOND}"]
    one_key(posts)
    assert [poll.ticket for poll in polls] == [FIRST, FIRST, SECOND]
    # Each poll poll_after_seconds after the last answer, give or take 20 % (never the
    # 429's Retry-After of 40 s): 2 s, 2 s, then 1 s (whose lower bound is the 1 s floor).
    first_wait, *between = gaps([posts[0], *polls])
    for wait, poll_after in zip([first_wait, *between], [2, 2, 1], strict=True):
        assert max(1.0, 0.8 * poll_after) - 0.01 <= wait <= 1.2 * poll_after + SLACK_S
    assert posts[1].at - polls[-1].at < SLACK_S  # sent at once on its turn
    assert said == [SEND_MESSAGES["sending"], QUEUE_MESSAGES["joined"], QUEUE_MESSAGES["turn"],
                    SEND_MESSAGES["accepted"]]
    assert status_id == REGISTRATION_ID
    assert left_in_storage == "[]"


async def test_ticket_used_is_the_registration_an_earlier_try_made(
    door: ScriptedDoor, registrants: RegistrantFactory,
) -> None:
    door.posts = [queued(ticket(FIRST)),
                  refused(409, "ticket_used", ticket(FIRST, "registered",
                                                     registration_id=EARLIER_ID))]
    door.polls = [polled(ticket(FIRST, "your_turn"))]
    async with chromium_page() as page:
        await open_and_send(page, door, registrants)
        await page.wait_for_selector('#status-state[data-state="accepted"]')
        status_id = await page.text_content("#status-id")
        notice = await page.text_content("#notice")

    assert [post.auth for post in door.of("POST")] == ["", f"Queue {FIRST}"]
    one_key(door.of("POST"))
    assert status_id == EARLIER_ID
    assert notice == SEND_MESSAGES["accepted"]


async def test_leaving_sends_delete_and_returns_to_the_filled_form(
    door: ScriptedDoor, registrants: RegistrantFactory,
) -> None:
    door.posts = [queued(ticket(FIRST))]
    door.polls = [polled(ticket(SECOND))]
    async with chromium_page() as page:
        person = await open_and_send(page, door, registrants)
        await page.wait_for_function(
            "token => (sessionStorage.getItem('gelombang.antrean') || '').includes(token)",
            arg=SECOND)
        await page.click("#queue-leave")
        await door.seen(lambda d: bool(d.of("DELETE")))
        await notice_is(page, QUEUE_MESSAGES["left"])
        back = [await page.is_visible("#registration"), await page.is_hidden("#queue"),
                await page.is_enabled("#submit")]
        kept = [await page.input_value(f"#{name}") == person[name] for name in PERSONAL]
        storage = await stored_place(page)
        polls_then = len(door.of("GET"))
        await asyncio.sleep(1.2 + SLACK_S)  # the longest a poll was set for, and then some
        polls_after = len(door.of("GET"))
        door.posts = [ACCEPT]
        await page.click("#submit")  # the same form: the same key, no ticket (it left)
        await page.wait_for_selector('#status-state[data-state="accepted"]')

    [delete] = door.of("DELETE")
    assert delete.ticket == SECOND
    assert back == [True, True, True]
    assert all(kept), "the form's data stays in the form"
    assert storage == "[]"
    assert polls_after == polls_then
    posts = door.of("POST")
    assert [post.auth for post in posts] == ["", ""]
    one_key(posts)


async def test_the_prequeue_shows_the_opening_in_wib_then_the_drawn_place(
    door: ScriptedDoor, registrants: RegistrantFactory,
) -> None:
    opens = (datetime.datetime.now(datetime.UTC).replace(microsecond=0)
             + datetime.timedelta(hours=2))
    opens_at = opens.strftime("%Y-%m-%dT%H:%M:%SZ")
    door.posts = [queued(ticket(FIRST, "prequeue", eta=(7200, 7500), opens_at=opens_at))]
    door.polls = [polled(ticket(FIRST, "prequeue", opens_at=opens_at)),
                  polled(ticket(SECOND, position=7, ahead=6, eta=(60, 90)))]
    async with chromium_page(timezone_id=ELSEWHERE) as page:
        await open_and_send(page, door, registrants)
        await page.wait_for_selector('#queue-state[data-state="prequeue"]')
        await page.wait_for_selector("#queue-opens-in:text('Dibuka dalam')")
        prequeue = {name: await page.text_content(f"#queue-{name}")
                    for name in ("state", "opens", "opens-in")}
        unplaced = await page.is_hidden("#queue-position")
        await page.wait_for_selector("#queue-position:text('7')")
        drawn = [await page.text_content("#queue-ahead"),
                 await page.is_hidden("#queue-prequeue")]
        said = await announced(page)

    assert prequeue["state"] == "Menunggu pembukaan"
    wib = opens.astimezone(JAKARTA).strftime("%H.%M.%S WIB")
    assert (prequeue["opens"] or "").startswith("Pendaftaran dibuka ")
    assert (prequeue["opens"] or "").endswith(wib + ".")
    assert re.fullmatch(r"Dibuka dalam (1 jam 59 menit \d+|2 jam 0 menit 0) detik\.",
                        prequeue["opens-in"] or "")
    assert unplaced
    assert drawn == ["6 orang di depan Anda", True]
    assert said == [SEND_MESSAGES["sending"], QUEUE_MESSAGES["prequeue"],
                    QUEUE_MESSAGES["opened"]]


async def test_a_reload_keeps_the_place_and_only_the_ticket_is_stored(
    door: ScriptedDoor, registrants: RegistrantFactory,
) -> None:
    door.posts = [queued(ticket(FIRST)), ACCEPT]
    door.polls = [polled(ticket(FIRST, poll_after=30))]
    async with chromium_page(timezone_id=ELSEWHERE) as page:
        person = await open_and_send(page, door, registrants)
        await page.wait_for_selector("#queue-position:text('1.234')")
        storage = await stored_place(page)
        leaks = [name for name in PERSONAL if person[name] in storage]
        before = len(door.of("GET"))
        await page.reload()
        await page.wait_for_selector("#queue-position:text('1.234')")
        restored = [await page.is_visible("#queue"), await page.is_visible("#registration"),
                    await page.text_content("#queue-note")]
        await notice_is(page, QUEUE_MESSAGES["resumed"])
        door.polls = [polled(ticket(FIRST, "your_turn",
                                    turn_valid_until="2026-12-07T03:05:00Z"))]
        # The next poll is 30 s away; a reload asks at once.
        await page.reload()
        await page.wait_for_function(
            "text => document.getElementById('notice').textContent.startsWith(text)",
            arg="Giliran Anda tiba. Isi kembali")
        turn = await page.text_content("#notice")
        await fill_form(page, person)
        await page.click("#submit")
        await page.wait_for_selector('#status-state[data-state="accepted"]')

    assert leaks == []
    assert FIRST in storage
    polls = door.of("GET")
    assert len(polls) > before and {poll.ticket for poll in polls} == {FIRST}
    assert restored == [True, True, QUEUE_MESSAGES["refill_note"]]
    assert turn == QUEUE_MESSAGES["turn_refill"].replace("{time}", "10.05.00 WIB")
    posts = door.of("POST")
    assert [post.auth for post in posts] == ["", f"Queue {FIRST}"]
    assert len({post.body for post in posts}) == 1


@pytest.mark.parametrize("where", ["poll", "post"])
async def test_an_expired_turn_offers_to_join_again_at_the_back(
    where: str, door: ScriptedDoor, registrants: RegistrantFactory,
) -> None:
    expired = refused(410, "ticket_expired", ticket(FIRST, "expired"))
    if where == "poll":
        door.posts = [queued(ticket(FIRST)), ACCEPT]
        door.polls = [expired]
    else:
        door.posts = [queued(ticket(FIRST)), expired, ACCEPT]
        door.polls = [polled(ticket(FIRST, "your_turn"))]
    async with chromium_page() as page:
        await open_and_send(page, door, registrants)
        await page.wait_for_selector('#queue-state[data-state="expired"]')
        notice = await page.text_content("#notice")
        polls_then = len(door.of("GET"))
        await page.click("#queue-rejoin")
        await page.wait_for_selector('#status-state[data-state="accepted"]')

    assert notice == QUEUE_MESSAGES["expired"]
    assert len(door.of("GET")) == polls_then  # no polls of an expired ticket
    posts = door.of("POST")
    # Joining again is sending without the spent ticket.
    expected = ["", ""] if where == "poll" else ["", f"Queue {FIRST}", ""]
    assert [post.auth for post in posts] == expected
    one_key(posts)


async def test_an_invalid_ticket_is_dropped_and_the_registration_sent_once_without_it(
    door: ScriptedDoor, registrants: RegistrantFactory,
) -> None:
    door.posts = [queued(ticket(FIRST)), refused(403, "invalid_ticket"), ACCEPT]
    door.polls = [polled(ticket(FIRST, "your_turn"))]
    async with chromium_page() as page:
        await open_and_send(page, door, registrants)
        await page.wait_for_selector('#status-state[data-state="accepted"]')

    posts = door.of("POST")
    assert [(post.answer, post.auth) for post in posts] == [
        ("429 queued waiting", ""), ("403 invalid_ticket", f"Queue {FIRST}"), ("202", "")]
    one_key(posts)


async def test_polls_wait_out_their_own_retry_after_and_retry_a_lost_connection(
    door: ScriptedDoor, registrants: RegistrantFactory,
) -> None:
    door.posts = [queued(ticket(FIRST)), ACCEPT]
    door.polls = [DROP]
    async with chromium_page() as page:
        await open_and_send(page, door, registrants)
        # Dropped until the page says so (Chromium itself may resend a GET once on a cut
        # keep-alive connection).
        await page.wait_for_selector(f"#queue-note:text('{ERROR_MESSAGES['network']}')")
        door.polls = [refused(429, "client_limited", retry_after=2),
                      polled(ticket(FIRST, "your_turn"))]
        await page.wait_for_selector('#status-state[data-state="accepted"]')

    answers = [poll.answer for poll in door.of("GET")]
    assert answers[-2:] == ["429 client_limited", "200 your_turn"]
    assert set(answers[:-2]) == {"dropped"}
    limited, turn = door.of("GET")[-2:]
    # Retry-After 2 s, plus up to the backoff after the failures before it (2 s doubled per
    # failure; Chromium's own resends make the door count more, so this bound is loose).
    backoff = 2 * 2 ** (len(answers) - 2)
    assert 2.0 - 0.01 <= turn.at - limited.at <= 2.0 + backoff + SLACK_S
    assert [post.auth for post in door.of("POST")] == ["", f"Queue {FIRST}"]


async def test_the_poll_delay_is_poll_after_give_or_take_a_fifth_and_at_least_a_second(
    door: ScriptedDoor,
) -> None:
    async with chromium_page() as page:
        await page.goto(door.url)
        delays = await page.evaluate("""() => {
            const delay = window.gelombangForm.pollDelay;
            return {
                bounds: [delay(20, 0), delay(20, 0.999999), delay(0.5, 0), delay(0, 0.5),
                         delay(null, 0.5)],
                spread: Array.from({length: 200}, () => delay(20, Math.random())),
            };
        }""")

    low, high, floor, zero, missing = delays["bounds"]
    assert low == 16 and 23.99 < high <= 24
    assert floor == 1  # never more than one poll a second, whatever the door says
    assert zero == missing == 10  # a ticket without poll_after_seconds: every 10 s
    spread = delays["spread"]
    assert all(16 <= d <= 24 for d in spread) and len({round(d, 1) for d in spread}) > 40
