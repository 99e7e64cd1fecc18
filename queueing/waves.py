"""Scheduled waves of the waiting room: their schedules, seeds and lines (docs/waiting-room.md).

A wave is listed in the admin hash WAVES (wave -> JSON schedule), beside the
live admission settings, and every change to the list commits in one MULTI
with its audit entry. The wave's own state hash (another hash tag, the line's)
holds the same schedule for the line's script, and the secret seed of the
pre-queue's draw with its published SHA-256; it is written first, by a script
(queueing/lua/wave_schedule.lua), so a wave is never listed without its seed.

Times are Unix seconds (ints). The clock that decides whether a pre-queue has
started or a wave has opened is the caller's (`now`, the door's or the CLI
machine's): doors' clocks are kept by NTP, and a second's difference at the
edges is what it costs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from config.settings import WaveConfig
from queueing.audit import audit_fields, queue_audit
from queueing.errors import QueueingError
from queueing.keys import STANDING_WAVE, WAVES, WaveKeys
from queueing.redis_client import REDIS_UNAVAILABLE, RedisClient
from queueing.scripts import PipelinedScript, script_source

log = logging.getLogger(__name__)

SEED_BYTES: Final = 32
# A wave's name, as config/settings.py WaveConfig's pattern: it goes into key names
# (a hash tag), so never a brace.
WAVE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
# The line's counters in the wave's state hash (written by the line's script).
COUNTERS: Final = ("drawn", "tail", "served", "expired", "used")
# What the audit trail calls the two changes (also the admin routes' names).
SCHEDULE_ACTION: Final = "waves.schedule"
CANCEL_ACTION: Final = "waves.cancel"
_SCHEDULE_SCRIPT: Final = script_source("wave_schedule")
_SUMMARY_SCRIPT: Final = script_source("wave_summary")


class WaveError(QueueingError):
    """A wave change refused for what it asks; `code` says why.

    `invalid_schedule` (not prequeue_from <= opens_at < closes_at),
    `already_closed` (closes_at not in the future), `invalid_name` (not WAVE_NAME),
    `reserved_name` (the standing line's), `wave_started` (its pre-queue started: no rescheduling),
    `unknown_wave`, `wave_open` (it opened: no cancelling).
    """

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class WaveSchedule:
    """When a wave's pre-queue starts, when it opens (the draw) and when joining ends."""

    wave: str
    prequeue_from: int
    opens_at: int
    closes_at: int

    def phase(self, now: float) -> str:
        """`scheduled`, `prequeue`, `open` or `closed` at `now`."""
        if now < self.prequeue_from:
            return "scheduled"
        if now < self.opens_at:
            return "prequeue"
        return "open" if now < self.closes_at else "closed"

    def fields(self) -> dict[str, int]:
        """The schedule as WAVES's JSON and the audit trail hold it."""
        return {"prequeue_from": self.prequeue_from, "opens_at": self.opens_at,
                "closes_at": self.closes_at}

    @classmethod
    def of(cls, config: WaveConfig) -> WaveSchedule:
        """A configured wave's schedule."""
        return cls(config.wave, config.prequeue_from, config.opens_at, config.closes_at)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse(wave: str, raw: bytes | str) -> WaveSchedule | None:
    """A listed schedule; None for an entry that is not one (written by hand)."""
    try:
        fields = orjson.loads(raw)
        return WaveSchedule(wave, int(fields["prequeue_from"]), int(fields["opens_at"]),
                            int(fields["closes_at"]))
    except (ValueError, TypeError, KeyError):
        log.warning("a wave listed in %s is not a schedule: left out", WAVES)
        return None


async def read_waves(redis: RedisClient) -> list[WaveSchedule]:
    """Every scheduled wave, by the start of its pre-queue (then by name)."""
    stored: Mapping[Any, Any] = await redis.hgetall(WAVES)
    parsed = (_parse(_text(wave), raw) for wave, raw in stored.items())
    return sorted((w for w in parsed if w is not None), key=lambda w: (w.prequeue_from, w.wave))


async def read_wave(redis: RedisClient, wave: str) -> WaveSchedule | None:
    """One scheduled wave, or None when it is not scheduled."""
    raw: Any = await redis.hget(WAVES, wave)
    return None if raw is None else _parse(wave, raw)


def wave_in_force(waves: Sequence[WaveSchedule], now: float) -> WaveSchedule | None:
    """The latest-starting wave with prequeue_from <= now < closes_at; None: the standing line."""
    current = [w for w in waves if w.prequeue_from <= now < w.closes_at]
    if not current:
        return None
    return max(current, key=lambda w: (w.prequeue_from, w.opens_at, w.wave))


def _check(schedule: WaveSchedule, now: float) -> None:
    if not WAVE_NAME.fullmatch(schedule.wave):
        raise WaveError("invalid_name")
    if schedule.wave == STANDING_WAVE:
        raise WaveError("reserved_name")
    if not schedule.prequeue_from <= schedule.opens_at < schedule.closes_at:
        raise WaveError("invalid_schedule")
    if schedule.closes_at <= now:
        raise WaveError("already_closed")


async def schedule_wave(redis: RedisClient, schedule: WaveSchedule, *, actor: str, source: str,
                        now: float | None = None) -> bool:
    """Schedule a new wave or reschedule one whose pre-queue has not started; audited.

    Returns whether the wave was created (its seed drawn now). Raises WaveError.
    Rescheduling a started wave to the schedule it has already is allowed (a no-op).
    """
    now = time.time() if now is None else now
    _check(schedule, now)
    existing = await read_wave(redis, schedule.wave)
    started = existing is not None and existing.prequeue_from <= now
    if started and existing != schedule:
        raise WaveError("wave_started")
    seed = os.urandom(SEED_BYTES)
    keys = WaveKeys(schedule.wave)
    # The wave's own state first (its hash tag is not {admin}): listed only once seeded.
    written = await PipelinedScript(redis, _SCHEDULE_SCRIPT).run(
        keys.all(),
        [schedule.prequeue_from, schedule.opens_at, schedule.closes_at, seed.hex(),
         hashlib.sha256(seed).hexdigest(), int(now),
         "1" if existing is not None and not started else "0"])
    del seed  # the state hash holds the wave's seed: this one, or the one it had
    if int(written) == -1:
        raise WaveError("wave_started")
    created = int(written) == 1
    details = {"wave": schedule.wave, **schedule.fields(), "created": created}
    async with redis.pipeline(transaction=True) as pipe:
        _ = pipe.hset(WAVES, schedule.wave, orjson.dumps(schedule.fields()))
        queue_audit(pipe, audit_fields(actor=actor, source=source, action=SCHEDULE_ACTION,
                                       details=details))
        await pipe.execute()
    return created


async def cancel_wave(redis: RedisClient, wave: str, *, actor: str, source: str,
                      now: float | None = None) -> WaveSchedule:
    """Cancel a wave that has not opened (its pre-queue's tickets go with it); audited.

    Returns the schedule it had. Raises WaveError (`unknown_wave`, `wave_open`).
    """
    now = time.time() if now is None else now
    existing = await read_wave(redis, wave)
    if existing is None:
        raise WaveError("unknown_wave")
    if existing.opens_at <= now:
        raise WaveError("wave_open")
    async with redis.pipeline(transaction=True) as pipe:
        _ = pipe.hdel(WAVES, wave)
        queue_audit(pipe, audit_fields(actor=actor, source=source, action=CANCEL_ACTION,
                                       details={"wave": wave, **existing.fields()}))
        await pipe.execute()
    # Unlisted first, so no door takes it for the wave in force once this is gone.
    # Should a door's tick write to it after this, scheduling the name again clears
    # that (queueing/lua/wave_schedule.lua).
    await redis.delete(*WaveKeys(wave).all())
    return existing


async def ensure_configured(redis: RedisClient, waves: Sequence[WaveConfig], *,
                            now: float | None = None) -> list[str]:
    """Schedule each configured wave that is not scheduled yet (and has not closed).

    Idempotent: a wave already in WAVES is left as it is, even when the admin API
    changed it. Returns the waves it scheduled.
    """
    if not waves:
        return []
    now = time.time() if now is None else now
    listed = {w.wave for w in await read_waves(redis)}
    scheduled = []
    for config in waves:
        if config.wave in listed:
            continue
        if config.closes_at <= now:
            log.info("configured wave %s closed already: not scheduled", config.wave)
            continue
        await schedule_wave(redis, WaveSchedule.of(config), actor="config", source="config",
                            now=now)
        log.info("configured wave %s scheduled", config.wave)
        scheduled.append(config.wave)
    return scheduled


async def schedule_configured(redis: RedisClient, waves: Sequence[WaveConfig],
                              seconds_per_wave: float) -> None:
    """ensure_configured at a door's start, best-effort: a failure is logged (by its type)
    and leaves the waves to the next door that starts; the door starts regardless."""
    try:
        async with asyncio.timeout(seconds_per_wave * max(1, len(waves))):
            await ensure_configured(redis, waves)
    except (*REDIS_UNAVAILABLE, WaveError) as exc:
        log.warning("configured waves not scheduled (%s)", type(exc).__name__)


@dataclass(frozen=True, slots=True)
class LineSummary:
    """One wave's line as its state hash tells it (no release rate: that is the door's)."""

    wave: str
    schedule: WaveSchedule | None  # None: the standing line
    seed_sha256: str | None
    seed: str | None  # only once the wave has opened
    drawn: int  # the pre-queue's size at the draw
    prequeue: int  # who joined the pre-queue so far
    tail: int  # the last position handed out
    served: int  # the served counter
    expired: int
    used: int
    gone_ahead: int  # positions past the served counter whose holders left

    @property
    def waiting(self) -> int:
        """Live tickets behind the served counter: the line's length."""
        return max(0, self.tail - self.served - self.gone_ahead)

    def phase(self, now: float) -> str:
        """The wave's phase; the standing line is always `open`."""
        return "open" if self.schedule is None else self.schedule.phase(now)

    def eta_of_last_seconds(self, rate: float, now: float) -> float | None:
        """When the last person of the line is served at `rate` positions a second
        (before the opening: the time to the opening, then the whole pre-queue)."""
        if rate <= 0:
            return None
        if self.schedule is not None and now < self.schedule.opens_at:
            return self.schedule.opens_at - now + self.prequeue / rate
        return self.waiting / rate


def _count(state: Mapping[bytes, bytes], name: str) -> int:
    raw = state.get(name.encode())
    return 0 if raw is None else int(float(raw))


async def line_summary(redis: RedisClient, wave: str, *,
                       now: float | None = None) -> LineSummary:
    """The line of `wave` (STANDING_WAVE included) from its keys, in one round trip."""
    now = time.time() if now is None else now
    keys = WaveKeys(wave)
    flat, prequeue, gone_ahead = await PipelinedScript(redis, _SUMMARY_SCRIPT).run(
        [keys.state, keys.draw, keys.gone], [])
    state: dict[bytes, bytes] = dict(zip(flat[::2], flat[1::2], strict=True))
    schedule = None
    if wave != STANDING_WAVE and b"opens_at" in state:
        schedule = WaveSchedule(wave, _count(state, "prequeue_from"), _count(state, "opens_at"),
                                _count(state, "closes_at"))
    revealed = schedule is not None and now >= schedule.opens_at
    seed = state.get(b"seed") if revealed else None
    digest = state.get(b"seed_sha256")
    return LineSummary(
        wave=wave, schedule=schedule,
        seed_sha256=None if digest is None else digest.decode(),
        seed=None if seed is None else seed.decode(),
        drawn=_count(state, "drawn"), prequeue=int(prequeue), tail=_count(state, "tail"),
        served=_count(state, "served"), expired=_count(state, "expired"),
        used=_count(state, "used"), gone_ahead=int(gone_ahead))
