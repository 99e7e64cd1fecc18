"""The live admission refresher ends when told, even without its cancellation."""

from __future__ import annotations

import asyncio

from queueing.admission import AdmissionPolicy
from queueing.live_settings import LiveAdmission
from queueing.redis_client import RedisClient


async def test_the_refresher_ends_at_its_next_turn_once_stopped(
        redis_client: RedisClient) -> None:
    live = LiveAdmission(redis_client, AdmissionPolicy(
        rate_per_second=100.0, burst=10, backlog_high_water=1000, enabled=True, open=True), 4, 60)
    refresher = asyncio.create_task(live.run(0.05))
    await asyncio.sleep(0.2)
    assert not refresher.done()  # it refreshes on while not stopped
    live.stop()
    # No cancel: a shutdown whose cancel was lost inside a Redis call still ends.
    await asyncio.wait_for(refresher, 2.0)
