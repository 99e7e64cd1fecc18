"""Headless Debian Chromium driven by Playwright, for the web pages' tests.

Always the system browser (/usr/bin/chromium, installed by `make sysdeps`),
never one Playwright downloads. One Chromium serves the run's web tests (started at
the first, closed at the session's end by tests/web/conftest.py): each test gets a
fresh browser context of its own, a profile with nothing shared (no storage, cookies
or cache of another test's), at a fraction of the second a Chromium takes to start.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import pytest
from playwright.async_api import Browser, Page, Playwright, async_playwright

CHROMIUM: Final = Path("/usr/bin/chromium")
# Nothing outside loopback is reachable (or wanted): no updates, sync or QUIC probes.
ARGS: Final = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Long enough for a loaded 2-core machine; every wait is for an event, not a duration.
WAIT_MS: Final = 30_000


class _Shared:
    """The run's Playwright driver and Chromium, once started."""

    playwright: Playwright | None = None
    browser: Browser | None = None


async def _browser() -> Browser:
    """The run's Chromium, started now if none runs (or the last one died)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make sysdeps` installs Debian's chromium")
    if _Shared.browser is None or not _Shared.browser.is_connected():
        if _Shared.playwright is None:
            _Shared.playwright = await async_playwright().start()
        _Shared.browser = await _Shared.playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=ARGS)
    return _Shared.browser


async def close_chromium() -> None:
    """Close the run's Chromium and Playwright driver, if started."""
    browser, playwright = _Shared.browser, _Shared.playwright
    _Shared.browser = _Shared.playwright = None
    if browser is not None:
        with contextlib.suppress(Exception):
            await browser.close()
    if playwright is not None:
        await playwright.stop()


@contextlib.asynccontextmanager
async def chromium_page(**options: Any) -> AsyncIterator[Page]:
    """A page in a fresh browser context (a profile of its own) for this test.

    `options` go to Playwright's new_context (timezone_id, java_script_enabled).
    """
    browser = await _browser()
    context = await browser.new_context(
        viewport={"width": 900, "height": 900}, locale="id-ID", **options)
    context.set_default_timeout(WAIT_MS)
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def fill_form(page: Page, person: dict[str, str]) -> None:
    """Types a registrant into the public form and ticks the consent."""
    for name in ("nik", "full_name", "email", "phone", "birth_date"):
        await page.fill(f"#{name}", person[name])
    await page.check("#consent")
