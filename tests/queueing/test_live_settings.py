"""The live admission refresher ends when told, even without its cancellation."""

from __future__ import annotations

import asyncio

from queueing.admission import AdmissionPolicy
from queueing.live_settings import LiveAdmission
from queueing.redis_client import RedisClient


async def test_the_refresher_ends_at_its_next_turn_once_stopped(
        redis_client: RedisClient) -> None:
    live = LiveAdmission(redis_client, AdmissionPolicy(100.0, 10, 1000, True, True), 4, 60)
    refresher = asyncio.create_task(live.run(0.05))
    await asyncio.sleep(0.2)
    assert not refresher.done()  # it refreshes on while not stopped
    live.stop()
    # No cancel: a shutdown whose cancel was lost inside a Redis call still ends.
    await asyncio.wait_for(refresher, 2.0)
