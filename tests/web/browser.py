"""Headless Debian Chromium driven by Playwright, for the web pages' tests.

Always the system browser (/usr/bin/chromium, installed by `make sysdeps`),
never one Playwright downloads; a fresh profile for every test.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import pytest
from playwright.async_api import Page, async_playwright

CHROMIUM: Final = Path("/usr/bin/chromium")
# Nothing outside loopback is reachable (or wanted): no updates, sync or QUIC probes.
ARGS: Final = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Long enough for a loaded 2-core machine; every wait is for an event, not a duration.
WAIT_MS: Final = 30_000


@contextlib.asynccontextmanager
async def chromium_page(profile: Path, **options: Any) -> AsyncIterator[Page]:
    """A page of a Chromium started for this test, its profile in `profile`.

    `options` go to Playwright's launch_persistent_context (timezone_id, java_script_enabled).
    """
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make sysdeps` installs Debian's chromium")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            user_data_dir=profile, executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 900, "height": 900}, locale="id-ID", **options,
        )
        context.set_default_timeout(WAIT_MS)
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            yield page
        finally:
            await context.close()


async def fill_form(page: Page, person: dict[str, str]) -> None:
    """Types a registrant into the public form and ticks the consent."""
    for name in ("nik", "full_name", "email", "phone", "birth_date"):
        await page.fill(f"#{name}", person[name])
    await page.check("#consent")
