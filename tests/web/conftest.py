"""The web tests' one Chromium (tests/web/browser.py), closed at the run's end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.web.browser import close_chromium


@pytest.fixture(scope="session", autouse=True)
async def shared_chromium() -> AsyncIterator[None]:
    """Closes the Chromium the web tests shared, after the last of them."""
    yield
    await close_chromium()
