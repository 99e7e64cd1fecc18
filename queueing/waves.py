"""Scheduled waves: which line is in force (docs/waiting-room.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from queueing.keys import WAVES
from queueing.redis_client import RedisClient


@dataclass(frozen=True, slots=True)
class WaveSchedule:
    """One scheduled wave (Unix seconds)."""

    wave: str
    prequeue_from: int
    opens_at: int
    closes_at: int


async def read_waves(redis: RedisClient) -> list[WaveSchedule]:
    """Every scheduled wave, earliest pre-queue first."""
    stored = await redis.hgetall(WAVES)
    waves = []
    for raw_name, raw in stored.items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        fields = orjson.loads(raw)
        waves.append(WaveSchedule(name, int(fields["prequeue_from"]), int(fields["opens_at"]),
                                  int(fields["closes_at"])))
    return sorted(waves, key=lambda wave: (wave.prequeue_from, wave.wave))


def wave_in_force(waves: Sequence[WaveSchedule], now: float) -> WaveSchedule | None:
    """The latest-starting wave whose pre-queue has begun and which has not closed;
    None: the standing line is in force."""
    current = [wave for wave in waves if wave.prequeue_from <= now < wave.closes_at]
    return max(current, key=lambda wave: (wave.prequeue_from, wave.wave), default=None)
