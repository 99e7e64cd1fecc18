"""The fault drills: what each one breaks, when, and what it may cost.

A fault runs beside the surge: it waits until a share of the applicants has
been sent, breaks one part of the stack, waits, and mends it (a restart
brings back whatever is not running, on the same ports and data). The
stack's processes are started and stopped from a thread, so the surge keeps
its pace meanwhile.
"""

from __future__ import annotations

import asyncio
import math
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from redis.asyncio import Redis

from config.settings import Settings
from loadtest.drills.stack import DrillStack
from loadtest.drills.traffic import Surge
from loadtest.drills.verdict import Tolerance

# When the fault strikes: after this share of the surge was sent.
STRIKE_AT: Final = 0.3
# How long a server stays down, paused or full.
OUTAGE_SECONDS: Final = 2.5
# Store worker restarts while PostgreSQL hangs (each one a takeover of every partition).
HANG_RESTARTS: Final = 6


@dataclass(frozen=True)
class DrillContext:
    """What a fault acts on."""

    stack: DrillStack
    surge: Surge
    settings: Settings

    async def when_sent(self, share: float) -> None:
        """Wait until this share of the applicants has been sent."""
        await self.surge.sent_at_least(math.ceil(share * len(self.surge.record.applicants)))

    async def in_thread(self, action: Callable[[], object]) -> None:
        """Run a blocking stack operation without stopping the surge."""
        await asyncio.to_thread(action)

    def redis(self) -> Redis:
        """A client of the stack's Redis (for CONFIG SET)."""
        return Redis.from_url(self.settings.redis.url, socket_timeout=5)

    async def simulator(self, method: str, path: str, body: object) -> None:
        """Call the NIK simulator's admin API."""
        url = f"http://127.0.0.1:{self.settings.nik_sim.port}{path}"
        async with aiohttp.ClientSession() as session, \
                session.request(method, url, json=body) as reply:
            reply.raise_for_status()


Fault = Callable[[DrillContext], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Drill:
    """One fault, what it shows, and what it may legitimately cost."""

    name: str
    what: str
    fault: Fault
    tolerance: Tolerance = field(default_factory=Tolerance)


def _kill_and_restart(name: str, times: int = 1) -> Fault:
    async def fault(ctx: DrillContext) -> None:
        for strike in range(times):
            await ctx.when_sent(STRIKE_AT + strike * (0.9 - STRIKE_AT) / times)
            await ctx.in_thread(lambda: ctx.stack.kill(name))
            await asyncio.sleep(0.5)
            await ctx.in_thread(ctx.stack.restart)
    return fault


def _stop_and_restart(name: str, down_seconds: float = OUTAGE_SECONDS) -> Fault:
    async def fault(ctx: DrillContext) -> None:
        await ctx.when_sent(STRIKE_AT)
        await ctx.in_thread(lambda: ctx.stack.stop(name))
        await asyncio.sleep(down_seconds)
        await ctx.in_thread(ctx.stack.restart)
    return fault


def _redis_kill_everysec() -> Fault:
    restart = _kill_and_restart("redis")

    async def fault(ctx: DrillContext) -> None:
        redis = ctx.redis()
        try:
            await redis.config_set("appendfsync", "everysec")
        finally:
            await redis.aclose()
        # The restarted server runs with the stack's setting again (always).
        await restart(ctx)
    return fault


async def _redis_pause(ctx: DrillContext) -> None:
    await ctx.when_sent(STRIKE_AT)
    ctx.stack.signal("redis", signal.SIGSTOP)
    try:
        # Longer than the door's Redis timeout: it must answer 503, not hang.
        await asyncio.sleep(max(OUTAGE_SECONDS, 3 * ctx.settings.redis.timeout_seconds))
    finally:
        ctx.stack.signal("redis", signal.SIGCONT)


async def _redis_pause_after_send(ctx: DrillContext) -> None:
    # Stopped while the door sends: the next group lands in Redis's socket and
    # runs when it goes on, its reply long past the door's timeout. Once within
    # the door's check of that group's outcome (found out: 202), once past it
    # (503 outcome_unknown; the retry with the same key replays it).
    redis = ctx.settings.redis
    for share, held in ((STRIKE_AT, redis.timeout_seconds + redis.outcome_check_seconds / 2),
                        (STRIKE_AT + 0.3, redis.timeout_seconds + redis.outcome_check_seconds
                         + 1.0)):
        await ctx.when_sent(share)
        ctx.stack.signal("redis", signal.SIGSTOP)
        try:
            await asyncio.sleep(held)
        finally:
            ctx.stack.signal("redis", signal.SIGCONT)


async def _redis_full(ctx: DrillContext) -> None:
    await ctx.when_sent(STRIKE_AT)
    redis = ctx.redis()
    try:
        used = int((await redis.info("memory"))["used_memory"])
        # Full now: every write that needs memory is refused (OOM), as on a full disk.
        await redis.config_set("maxmemory-policy", "noeviction")
        await redis.config_set("maxmemory", str(used // 2))
        await asyncio.sleep(OUTAGE_SECONDS)
    finally:
        await redis.config_set("maxmemory", "0")
        await redis.aclose()


async def _postgres_hang_with_restarts(ctx: DrillContext) -> None:
    await ctx.when_sent(STRIKE_AT)
    lease = ctx.settings.drain.claim_idle_seconds
    # Hung, not down: the postmaster and every backend stopped, connections open,
    # statements in flight waiting; then the store worker restarts six times.
    ctx.stack.signal_group("postgres", signal.SIGSTOP)
    try:
        for _ in range(HANG_RESTARTS):
            await ctx.in_thread(lambda: ctx.stack.kill("worker-store"))
            # Not `restart()`: it would run the migrations first, on the hung server.
            await ctx.in_thread(lambda: ctx.stack.start_one("worker-store"))
            # Its predecessor's leases expire and it takes every partition over
            # (a delivery more for each entry in hand), then its store hangs too.
            await asyncio.sleep(lease + 0.5)
    finally:
        ctx.stack.signal_group("postgres", signal.SIGCONT)


async def _nik_outage(ctx: DrillContext) -> None:
    await ctx.when_sent(STRIKE_AT)
    await ctx.simulator("PUT", "/admin/outage", {"on": True})
    try:
        await asyncio.sleep(OUTAGE_SECONDS * 2)
    finally:
        await ctx.simulator("PUT", "/admin/outage", {"on": False})


def _tolerance_for_worker(in_hand: int, kills: int) -> int:
    # Jobs in hand when a worker is killed may have been done without being
    # recorded: they are done again (at least once, never zero times).
    return in_hand * kills


def drills(settings: Settings) -> dict[str, Drill]:
    """Every drill, by name, with tolerances from these settings."""
    catalogue = [
        Drill("redis-kill", "Redis kill -9 and restart (AOF always): nothing acknowledged lost",
              _kill_and_restart("redis")),
        Drill("redis-kill-everysec",
              "Redis kill -9 with appendfsync everysec: a process crash loses nothing either "
              "(the AOF is written before the reply); an OS crash could lose ~1 s",
              _redis_kill_everysec()),
        Drill("redis-pause", "Redis SIGSTOP longer than the door's timeout, then SIGCONT",
              _redis_pause),
        Drill("redis-pause-after-send",
              "Redis SIGSTOP with a group just sent to it, past the door's timeout (then "
              "past its check too): no refusal for a registration it stored",
              _redis_pause_after_send),
        Drill("redis-full", "Redis maxmemory reached (as a full disk): the door sheds with 503",
              _redis_full),
        Drill("store-kill", "store worker kill -9 mid-batch, three times",
              _kill_and_restart("worker-store", times=3)),
        Drill("email-kill", "email worker kill -9 mid-job", _kill_and_restart("worker-email"),
              Tolerance(emails_doubled=_tolerance_for_worker(
                  settings.email.concurrency * settings.email.batch_size, 1))),
        Drill("nik-kill", "NIK worker kill -9 mid-job", _kill_and_restart("worker-nik"),
              Tolerance(nik_checks_doubled=_tolerance_for_worker(settings.nik.concurrency, 1))),
        Drill("postgres-restart", "PostgreSQL fast shutdown and restart mid-drain",
              _stop_and_restart("postgres")),
        Drill("postgres-hang",
              "PostgreSQL hung (SIGSTOP) past the store worker's lease while it is killed and "
              "restarted six times: every entry stored once, none dead-lettered",
              _postgres_hang_with_restarts),
        Drill("nik-outage", "the ministry's API down (503), then back", _nik_outage),
        Drill("smtp-down", "the SMTP relay down, then back", _stop_and_restart("mail-sink"),
              # A relay that stops after storing a message but before its reply
              # reaches us gets that message again (SMTP's duplicate window,
              # RFC 1047): at most one per connection in use.
              Tolerance(emails_doubled=settings.email.connections)),
        Drill("door-sigterm", "the door SIGTERMed under load (graceful), then restarted",
              _stop_and_restart("door", down_seconds=0.0), Tolerance(connection_errors=True)),
        Drill("door-kill", "the door kill -9 under load, then restarted",
              _kill_and_restart("door"), Tolerance(connection_errors=True)),
    ]
    return {drill.name: drill for drill in catalogue}
