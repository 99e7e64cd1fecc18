"""The form's sending and retrying in headless Chromium, against a scripted door.

The scripted door serves the real page (intake/pages.py) and answers
POST /v1/registrations from a script each test sets: a 503 with Retry-After, a
proxy's HTML 502, a dropped connection, a 202. It records each POST's answer,
Idempotency-Key and arrival time, never its body, so failures print no
personal data. No Redis or PostgreSQL: these tests are about the page.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Page

from intake.form_rules import ERROR_MESSAGES, SEND_MESSAGES
from intake.pages import add_page_routes, form_page
from intake.responses import error_response
from loadtest.registrants import RegistrantFactory
from tests.web.browser import chromium_page, fill_form

KEY_SHAPE: Final = re.compile(r"[0-9a-f]{32}")
CLOCK: Final = re.compile(r"pukul (\d{2})\.(\d{2})\.(\d{2}) WIB\.")
JAKARTA: Final = ZoneInfo("Asia/Jakarta")
# The browser's own zone in these tests: UTC-3, ten hours from WIB, so a time shown in
# the browser's zone cannot pass for one in Jakarta's.
ELSEWHERE: Final = "America/Sao_Paulo"
REGISTRATION_ID: Final = str(uuid.UUID(int=0x0123456789ABCDEF0123456789ABCDEF))
UPDATED_AT: Final = "2026-11-22T03:04:05Z"  # 10.04.05 in Jakarta
LIVE: Final = "[aria-live], [role=status], [role=alert], [role=log]"


@dataclass(frozen=True)
class Answer:
    """One scripted answer to a POST, named for the record."""

    name: str
    respond: Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Post:
    """What the door saw of one POST: its answer, key and arrival (monotonic seconds)."""

    answer: str
    key: str
    at: float


def unavailable(code: str, retry_after: int) -> Answer:
    """The door's 503 with the contract's code and Retry-After."""
    async def respond(request: web.Request) -> web.StreamResponse:
        return error_response(503, code, headers={"Retry-After": str(retry_after)})

    return Answer(f"503 {code}", respond)


async def _proxy_page(request: web.Request) -> web.StreamResponse:
    # What nginx says when the door behind it is down: HTML, no Retry-After.
    return web.Response(status=502, content_type="text/html",
                        text="<html><body><h1>502 Bad Gateway</h1></body></html>")


async def _drop(request: web.Request) -> web.StreamResponse:
    # No answer at all: the connection is cut, and the browser's fetch fails.
    assert request.transport is not None
    request.transport.abort()
    return web.Response()


async def _accept(request: web.Request) -> web.StreamResponse:
    return web.json_response({"registration_id": REGISTRATION_ID}, status=202)


PROXY_502: Final = Answer("502 html", _proxy_page)
DROP: Final = Answer("dropped", _drop)
ACCEPT: Final = Answer("202", _accept)


@dataclass
class ScriptedDoor:
    """The real form page; POSTs answered from `script` in order, its last answer repeating."""

    url: str
    script: list[Answer] = field(default_factory=lambda: [ACCEPT])
    posts: list[Post] = field(default_factory=list)

    async def register(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/registrations: the script's next answer."""
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.posts.append(Post(answer.name, request.headers.get("Idempotency-Key", ""),
                               time.monotonic()))
        return await answer.respond(request)

    async def status(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/registrations/{id}: stored and verified, so the page stops polling."""
        return web.json_response({
            "registration_id": request.match_info["id"], "state": "accepted",
            "email_verification": "verified", "nik_verification": "verified",
            "updated_at": UPDATED_AT})


@pytest.fixture
async def door() -> AsyncIterator[ScriptedDoor]:
    app = web.Application()
    add_page_routes(app.router, form_page(), prefix="/", name="form")
    server = TestServer(app)
    scripted = ScriptedDoor("")
    app.router.add_post("/v1/registrations", scripted.register)
    app.router.add_get("/v1/registrations/{id}", scripted.status)
    await server.start_server(access_log=None)
    scripted.url = str(server.make_url("/"))
    try:
        yield scripted
    finally:
        await server.close()


async def notice_says(page: Page, text: str) -> str:
    """Waits until the live region contains `text`; returns all it says."""
    await page.wait_for_function(
        "text => document.getElementById('notice').textContent.includes(text)", arg=text)
    return await page.text_content("#notice") or ""


async def open_and_send(page: Page, door: ScriptedDoor, registrants: RegistrantFactory) -> None:
    await page.goto(door.url)
    await fill_form(page, registrants.make().body())
    await page.click("#submit")


def one_key(posts: list[Post]) -> str:
    keys = {post.key for post in posts}
    assert len(keys) == 1, "every try of one filled form carries the same Idempotency-Key"
    key = keys.pop()
    assert KEY_SHAPE.fullmatch(key)
    return key


async def test_a_503_outcome_unknown_then_202_keeps_the_key_and_shows_times_in_wib(
    door: ScriptedDoor, registrants: RegistrantFactory,
) -> None:
    door.script = [unavailable("outcome_unknown", 1), ACCEPT]
    async with chromium_page(timezone_id=ELSEWHERE) as page:
        await open_and_send(page, door, registrants)
        waiting = await notice_says(page, ERROR_MESSAGES["outcome_unknown"])
        jakarta_now = datetime.datetime.now(JAKARTA)
        await page.wait_for_selector('#status-state[data-state="accepted"]')
        shown = [await page.text_content(f"#{name}")
                 for name in ("status-id", "status-updated", "notice")]
        no_noscript = await page.is_hidden("#noscript")

    assert [post.answer for post in door.posts] == ["503 outcome_unknown", "202"]
    one_key(door.posts)
    # Not sooner than Retry-After (1 s); no later than it plus the first backoff (2 s).
    assert 1.0 <= door.posts[1].at - door.posts[0].at <= 3.0 + 1.5
    clock = CLOCK.search(waiting)
    assert clock is not None and "Mencoba lagi otomatis" in waiting
    hour, minute, second = (int(part) for part in clock.groups())
    retry_at = jakarta_now.replace(hour=hour, minute=minute, second=second, microsecond=0)
    # The time of the next try, in Jakarta: within its 1-3 s (past midnight, a day on).
    ahead = (retry_at - jakarta_now).total_seconds() % 86_400
    assert ahead <= 4 or ahead >= 86_400 - 2
    assert shown[0] == REGISTRATION_ID
    assert (shown[1] or "").endswith("10.04.05 WIB")
    assert shown[2] == SEND_MESSAGES["accepted"]
    assert no_noscript


async def test_a_proxy_502_page_then_202_retries_with_the_same_key(
    door: ScriptedDoor, registrants: RegistrantFactory,
) -> None:
    door.script = [PROXY_502, ACCEPT]
    async with chromium_page() as page:
        await open_and_send(page, door, registrants)
        await notice_says(page, ERROR_MESSAGES["server_error"])
        await page.wait_for_selector('#status-state[data-state="accepted"]')

    assert [post.answer for post in door.posts] == ["502 html", "202"]
    one_key(door.posts)


async def test_a_dropped_connection_then_202_retries_with_the_same_key(
    door: ScriptedDoor, registrants: RegistrantFactory,
) -> None:
    # Dropped until the page says so: Chromium itself resends a POST once when a reused
    # keep-alive connection is cut, and that resend must not be taken for the page's.
    door.script = [DROP]
    async with chromium_page() as page:
        await open_and_send(page, door, registrants)
        await notice_says(page, ERROR_MESSAGES["network"])
        door.script = [ACCEPT]
        await page.wait_for_selector('#status-state[data-state="accepted"]')

    answers = [post.answer for post in door.posts]
    assert answers[-1] == "202" and set(answers[:-1]) == {"dropped"}
    one_key(door.posts)


async def test_cancel_stops_the_retries_and_only_a_changed_form_gets_a_new_key(
    door: ScriptedDoor, registrants: RegistrantFactory,
) -> None:
    door.script = [unavailable("queue_unavailable", 1)]
    async with chromium_page() as page:
        await open_and_send(page, door, registrants)
        await page.wait_for_selector("#countdown")
        await page.click("#cancel")
        cancelled = await page.text_content("#notice")
        stopped = [await page.is_hidden("#retry"), await page.is_enabled("#submit")]
        # The longest the first retry could wait (Retry-After 1 s plus a 2 s backoff), and
        # then some: no timer is left to fire.
        await asyncio.sleep(4)
        after_cancel = len(door.posts)
        await page.click("#submit")  # the same filled form: the same key
        await page.wait_for_selector("#countdown")
        await page.click("#cancel")
        other = registrants.make().body()
        await page.fill("#phone", other["phone"])  # a changed form: a new key
        door.script = [ACCEPT]
        await page.click("#submit")
        await page.wait_for_selector('#status-state[data-state="accepted"]')

    assert cancelled == SEND_MESSAGES["cancelled"]
    assert stopped == [True, True]
    assert after_cancel == 1
    assert [post.answer for post in door.posts] == [
        "503 queue_unavailable", "503 queue_unavailable", "202"]
    first, again, changed = (post.key for post in door.posts)
    assert first == again != changed and KEY_SHAPE.fullmatch(changed)


async def test_the_live_region_changes_with_the_state_not_with_the_countdown(
    door: ScriptedDoor, registrants: RegistrantFactory,
) -> None:
    door.script = [unavailable("backlog_full", 3), ACCEPT]
    async with chromium_page() as page:
        await page.goto(door.url)
        # Every text the live region and the countdown line take, in order.
        await page.evaluate("""() => {
            window.seen = {notice: [], wait: []};
            for (const [name, id] of [["notice", "notice"], ["wait", "retry-wait"]]) {
                const element = document.getElementById(id);
                new MutationObserver(() => window.seen[name].push(element.textContent))
                    .observe(element, {childList: true, characterData: true, subtree: true});
            }
        }""")
        await fill_form(page, registrants.make().body())
        await page.click("#submit")
        await page.wait_for_selector("#countdown")
        live = await page.evaluate(
            "selector => [document.getElementById('notice').getAttribute('aria-live'),"
            " document.getElementById('countdown').closest(selector) === null]", LIVE)
        await page.wait_for_selector('#status-state[data-state="accepted"]')
        seen = await page.evaluate("window.seen")

    assert live == ["polite", True]
    announced = [text for i, text in enumerate(seen["notice"])
                 if i == 0 or text != seen["notice"][i - 1]]
    assert len(announced) == 3, "sending, waiting until a time, accepted: nothing more"
    assert announced[0] == SEND_MESSAGES["sending"]
    assert announced[1].startswith(ERROR_MESSAGES["backlog_full"] + " Mencoba lagi otomatis")
    assert CLOCK.search(announced[1])
    assert announced[2] == SEND_MESSAGES["accepted"]
    counted = {text for text in seen["wait"] if text.startswith("Percobaan berikutnya")}
    assert len(counted) >= 3  # 3, 2, 1 seconds at least: the countdown did tick


async def test_without_javascript_the_page_says_what_to_do_and_cannot_send(
    door: ScriptedDoor,
) -> None:
    async with chromium_page(java_script_enabled=False) as page:
        await page.goto(door.url)
        note = await page.text_content("#noscript") or ""
        visible = await page.is_visible("#noscript")
        disabled = await page.is_disabled("#submit")

    assert visible and disabled
    assert "memerlukan JavaScript" in note and "muat ulang" in note
    assert door.posts == []


async def test_the_retry_delay_honours_retry_after_and_spreads_a_capped_backoff(
    door: ScriptedDoor,
) -> None:
    async with chromium_page() as page:
        await page.goto(door.url)
        delays = await page.evaluate("""() => {
            const delay = window.gelombangForm.retryDelay;
            return {
                bounds: [delay(0, 5, 0), delay(0, 5, 0.999), delay(3, 0, 0.999),
                         delay(12, 2, 0.999), delay(0, 86400, 0)],
                spread: Array.from({length: 200}, () => delay(4, 2, Math.random())),
            };
        }""")

    low, high, third, capped, long_wait = delays["bounds"]
    assert low == 5 and 6.99 < high < 7  # Retry-After, plus up to the first backoff (2 s)
    assert 16.9 < third < 17  # a 1 s floor when no Retry-After, and 2 s doubled thrice
    assert 31.9 < capped < 32  # the backoff stops at 30 s
    assert long_wait == 600  # an absurd Retry-After is cut to ten minutes
    spread = delays["spread"]
    assert all(2 <= d <= 34 for d in spread) and len({round(d, 1) for d in spread}) > 50
