"""The operators' page at /admin/ in headless Chromium, against an in-process door."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
from playwright.async_api import Page
from redis.asyncio import Redis

from loadtest.registrants import RegistrantFactory
from queueing import process_reports
from queueing.keys import AUDIT_STREAM, DOOR_REPORTS, WaveKeys
from queueing.waves import WaveSchedule, schedule_wave
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.door_helpers import DoorUnderTest
from tests.web.browser import chromium_page
from tests.workers.verification_helpers import eventually
from workers.runtime.heartbeat import Heartbeat


async def sign_in(page: Page, door: DoorUnderTest, token: str) -> None:
    await page.goto(str(door.admin.make_url("/admin/")))
    await page.fill("#token", token)
    await page.click("#login button[type=submit]")


async def audited_actions(redis: Redis) -> list[str]:
    entries: Any = await redis.xrange(AUDIT_STREAM)
    return [fields[b"action"].decode() for _, fields in entries]


async def test_the_page_holds_no_data_and_a_wrong_token_gets_nothing(
    door_under_test: DoorUnderTest, redis_client: Redis,
) -> None:
    async with door_under_test.admin.get("/admin/") as reply:
        text = await reply.text()
        assert reply.status == 200
        assert reply.headers["Cache-Control"] == "no-store"
    assert "1500" not in text and "rate_per_second" not in text
    async with chromium_page() as page:
        await sign_in(page, door_under_test, "not-the-token")
        await page.wait_for_selector("#login-error:has-text('refused')")
        assert await page.is_hidden("#board")
        stored = await page.evaluate("sessionStorage.getItem('gelombang.adminToken')")
    assert stored is None
    assert await audited_actions(redis_client) == []


async def test_figures_show_and_a_confirmed_rate_change_is_applied_by_the_door(
    door_under_test: DoorUnderTest, redis_client: Redis, registrants: RegistrantFactory,
    pg: asyncpg.Connection,
) -> None:
    door = door_under_test
    for _ in range(3):
        async with door.public.post("/v1/registrations", json=registrants.make().body()) as r:
            assert r.status == 202
    async with chromium_page() as page:
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


async def test_every_process_has_a_row_stale_ones_marked_and_rates_are_the_deployments(
    door_under_test: DoorUnderTest, redis_client: Redis, registrants: RegistrantFactory,
    pg: asyncpg.Connection,
) -> None:
    door = door_under_test
    # Another pod's door (its report only, as it would write it) and a drain worker.
    other = "door-other-pod-1"
    await process_reports.publish(redis_client, other, 2.0, {"admitted": 0.0}, 0.0)
    await Heartbeat(redis_client, "drain", "drain-test-1", 5.0, lambda: {"stored": 0}).beat()
    await process_reports.publish(redis_client, "door-stopped", 2.0, {"admitted": 5.0}, 0.0)
    await redis_client.zadd(DOOR_REPORTS, {"door-stopped": time.time() - 60})
    async with chromium_page() as page:
        await sign_in(page, door, TEST_ADMIN_TOKEN)
        await page.wait_for_selector("#processes tr.stale:has-text('door-stopped')")
        await page.wait_for_selector("#processes tr[data-role=drain]:has-text('drain-test-1')")
        await page.wait_for_selector("#processes tr.total[data-role=door]:has-text('total of 2')")
        # The other pod admits 60 more within one 2 s report period: the deployment's
        # rate, which no one door's /metrics shows.
        await process_reports.publish(redis_client, other, 2.0, {"admitted": 60.0}, 0.0)
        # (The page's CSP refuses wait_for_function's eval: read the tile instead.)

        async def deployment_rate_shown() -> bool:
            text = (await page.text_content("#admitted")) or ""
            return text.replace(",", "").replace(".", "", 1).isdigit() and float(
                text.replace(",", "")) >= 5

        await eventually(deployment_rate_shown, within=15, what="the other pod's rate")
        total = await page.text_content("#processes tr.total[data-role=door]")
    assert total is not None and "admitted" in total


async def test_the_waiting_room_shows_the_line_in_force_and_the_waves(
    door_under_test: DoorUnderTest, redis_client: Redis, pg: asyncpg.Connection,
) -> None:
    now = int(time.time())
    await schedule_wave(redis_client, WaveSchedule("gelombang-1", now - 100, now - 50,
                                                   now + 3600), actor="t", source="s",
                        now=now - 200)
    await schedule_wave(redis_client, WaveSchedule("gelombang-2", now + 7200, now + 9000,
                                                   now + 9999), actor="t", source="s")
    # 4,500 waiting at the admission rate in force (1,500 / s): the last in 3 s.
    await redis_client.hset(WaveKeys("gelombang-1").state,
                            mapping={"drawn": 9000, "tail": 10000, "served": 5500,
                                     "expired": 12, "used": 5400})
    async with chromium_page() as page:
        await sign_in(page, door_under_test, TEST_ADMIN_TOKEN)
        # The test door's waiting room is off (tests/conftest.py), so no tick of its own
        # moves the figures written above; the page says so beside the wave.
        await page.wait_for_selector("#wr-wave:text-is('gelombang-1 (tickets off)')")
        await page.wait_for_selector("#wr-waiting:text-is('4,500')")
        await page.wait_for_selector("#wr-eta:text-is('3 s')")
        await page.wait_for_selector("#wr-figures tr:has-text('tickets expired')")
        await page.wait_for_selector("#waves tr:has-text('gelombang-2'):has-text('scheduled')")
        assert await page.locator("#waves tr").count() == 2
    assert "waves.read" in await audited_actions(redis_client)
