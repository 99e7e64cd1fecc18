"""The operators' page at /admin/ in headless Chromium, against an in-process door."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from playwright.async_api import Page
from redis.asyncio import Redis

from loadtest.registrants import RegistrantFactory
from queueing.keys import AUDIT_STREAM
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.door_helpers import DoorUnderTest
from tests.web.browser import chromium_page


async def sign_in(page: Page, door: DoorUnderTest, token: str) -> None:
    await page.goto(str(door.admin.make_url("/admin/")))
    await page.fill("#token", token)
    await page.click("#login button[type=submit]")


async def audited_actions(redis: Redis) -> list[str]:
    entries: Any = await redis.xrange(AUDIT_STREAM)
    return [fields[b"action"].decode() for _, fields in entries]


async def test_the_page_holds_no_data_and_a_wrong_token_gets_nothing(
    door_under_test: DoorUnderTest, redis_client: Redis, tmp_path: Path,
) -> None:
    async with door_under_test.admin.get("/admin/") as reply:
        text = await reply.text()
        assert reply.status == 200
        assert reply.headers["Cache-Control"] == "no-store"
    assert "1500" not in text and "rate_per_second" not in text
    async with chromium_page(tmp_path / "profile") as page:
        await sign_in(page, door_under_test, "not-the-token")
        await page.wait_for_selector("#login-error:has-text('refused')")
        assert await page.is_hidden("#board")
        stored = await page.evaluate("sessionStorage.getItem('gelombang.adminToken')")
    assert stored is None
    assert await audited_actions(redis_client) == []


async def test_figures_show_and_a_confirmed_rate_change_is_applied_by_the_door(
    door_under_test: DoorUnderTest, redis_client: Redis, registrants: RegistrantFactory,
    pg: asyncpg.Connection, tmp_path: Path,
) -> None:
    door = door_under_test
    for _ in range(3):
        async with door.public.post("/v1/registrations", json=registrants.make().body()) as r:
            assert r.status == 202
    async with chromium_page(tmp_path / "profile") as page:
        await sign_in(page, door, TEST_ADMIN_TOKEN)
        # The backlog tile counts the three queued registrations (from /metrics).
        await page.wait_for_selector("#backlog:text-is('3')")
        await page.wait_for_selector("#policy-rate:text-is('1,500 / s')")
        await page.wait_for_selector("#dead:text-is('0')")  # from the funnel
        assert await page.locator("#partitions tr").count() == door.door.settings.queue.partitions

        await page.fill("#set-rate", "7")
        await page.click("#controls button[type=submit]")
        await page.wait_for_selector("#confirm-text:has-text('rate_per_second 1500 → 7')")
        # Nothing changes before the confirmation.
        assert door.door.live.policy.rate_per_second == 1500
        assert "admission.update" not in await audited_actions(redis_client)
        await page.click("#confirm-yes")
        # The page's "in force" figure is the door's own policy, read back from /metrics.
        await page.wait_for_selector("#policy-rate:text-is('7 / s')")
    assert door.door.live.policy.rate_per_second == 7
    assert "admission.update" in await audited_actions(redis_client)
