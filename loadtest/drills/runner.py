"""Running one drill on a started stack: surge and fault together, then the verdict."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from loadtest.drills.catalogue import Drill, DrillContext
from loadtest.drills.stack import DrillStack
from loadtest.drills.traffic import Surge
from loadtest.drills.verdict import Verdict, judge


async def run_drill(stack: DrillStack, drill: Drill, count: int, rate: float,
                    settle_seconds: float, seed: int | None = None) -> Verdict:
    """Send `count` applicants at `rate`/s while the drill's fault strikes; judge them."""
    settings = stack.settings
    if settings is None:
        raise RuntimeError("the stack is not started")
    simulator = f"http://127.0.0.1:{settings.nik_sim.port}"
    # Each drill counts the NIKs answered twice from zero.
    async with aiohttp.ClientSession() as session, \
            session.post(f"{simulator}/admin/reset") as reply:
        reply.raise_for_status()
    surge = Surge(settings.public.base_url, count, rate, seed=seed)
    fault = asyncio.create_task(drill.fault(DrillContext(stack, surge, settings)))
    try:
        record = await surge.run()
    except BaseException:
        fault.cancel()
        raise
    await fault
    # Whatever the fault left down comes back before the verdict is read.
    await asyncio.to_thread(stack.restart)
    return await judge(drill.name, record, settings, Path(settings.email.maildir), simulator,
                       drill.tolerance, settle_seconds)
