"""Every process's counters in Redis, so one reader sees the whole deployment.

A door's /metrics answers for the processes of its own pod only; in
Kubernetes that is one pod's share. So each door process writes its counters
(admission outcomes, email links verified) into a hash of its own every
REPORT_SECONDS, with an expiry, and the workers already write theirs beside
their heartbeats (workers/runtime/heartbeat.py). `read_reports` reads them
all, for `gelombang status` and the ops page (GET /admin/v1/processes).

One pipelined write per process every few seconds, never one per request:
the door's hot path only bumps its local counters, and the report task
flushes them into its Prometheus counters and reads them from there. A
process that stops reporting is marked stale after STALE_PERIODS of its
period, its hash expires soon after, and its name leaves the sorted set
after FORGET_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from queueing.keys import DOOR_REPORTS, door_report, heartbeat_details, role_heartbeats
from queueing.redis_client import REDIS_UNAVAILABLE, RedisClient

log = logging.getLogger("gelombang.reports")

REPORT_SECONDS: Final = 2.0
# A process that missed this many of its periods is shown as stale, not summed.
STALE_PERIODS: Final = 3
# Names older than this leave the door's sorted set (their hashes expired long before).
FORGET_SECONDS: Final = 600.0
# The reader's bound per role: a deployment has tens of processes, not thousands.
MAX_PER_ROLE: Final = 500
# Where each role's names are, and each name's hash.
ROLE_KEYS: Final[Mapping[str, tuple[str, Callable[[str], str]]]] = {
    "door": (DOOR_REPORTS, door_report),
    "drain": (role_heartbeats("drain"), heartbeat_details),
    "email": (role_heartbeats("email"), heartbeat_details),
    "nik": (role_heartbeats("nik"), heartbeat_details),
}
# Hash fields that describe the process rather than count its work.
_DESCRIPTIVE: Final = frozenset({"role", "pid", "host", "started_at", "every"})
# A worker that reports no period (written before `every` was added) beats this often.
_DEFAULT_EVERY: Final = 5.0


@dataclass(frozen=True, slots=True)
class ProcessReport:
    """One process's last report: who, when, and its counters since it started."""

    role: str
    name: str
    host: str
    pid: int
    reported_at: float
    every: float
    counters: Mapping[str, float]

    def age(self, now: float) -> float:
        """Seconds since the report."""
        return max(0.0, now - self.reported_at)

    def stale(self, now: float) -> bool:
        """Whether the process missed STALE_PERIODS reports (stopped, or cut off)."""
        return self.age(now) > self.every * STALE_PERIODS


def door_name() -> str:
    """This door process's report name: host and pid (unique while it runs)."""
    return f"door-{socket.gethostname()}-{os.getpid()}"


async def publish(redis: RedisClient, name: str, every: float,
                  counters: Mapping[str, float], started_at: float) -> None:
    """Write one door process's report in one round trip."""
    now = time.time()
    fields: dict[Any, Any] = {"role": "door", "pid": os.getpid(), "host": socket.gethostname(),
                              "started_at": started_at, "every": every, **counters}
    key = door_report(name)
    async with redis.pipeline(transaction=False) as pipe:
        _ = pipe.zadd(DOOR_REPORTS, {name: now})
        _ = pipe.hset(key, mapping=fields)
        _ = pipe.expire(key, int(every * STALE_PERIODS) + 1)
        _ = pipe.zremrangebyscore(DOOR_REPORTS, "-inf", now - FORGET_SECONDS)
        await pipe.execute()


async def withdraw(redis: RedisClient, name: str) -> None:
    """Remove a door's report at a clean stop (else it goes stale, then expires)."""
    await redis.zrem(DOOR_REPORTS, name)
    await redis.delete(door_report(name))


class DoorReporter:
    """This door process's reports: `run` writes one every `every` seconds until `stop`."""

    def __init__(self, redis: RedisClient, counters: Callable[[], Mapping[str, float]],
                 every: float = REPORT_SECONDS, redis_seconds: float = 1.0) -> None:
        self.name: Final = door_name()
        self._redis = redis
        self._counters = counters
        self._every = every
        self._redis_seconds = redis_seconds
        self._started_at = time.time()
        self._running = True

    def stop(self) -> None:
        """End `run` at its next turn."""
        self._running = False

    async def run(self) -> None:
        """Report until stopped, then withdraw the report.

        Redis away costs a report or two, never the door: the next one catches
        up (the counters are totals since the process started). The flag as
        well as the task's cancellation: a cancel can be lost inside a Redis
        call (queueing/live_settings.py saw it), and a loop that reported on
        after its door stopped would count a process that is gone.
        """
        try:
            while self._running:
                with contextlib.suppress(*REDIS_UNAVAILABLE):
                    async with asyncio.timeout(self._redis_seconds):
                        await publish(self._redis, self.name, self._every, self._counters(),
                                      self._started_at)
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise asyncio.CancelledError  # the cancel the Redis call swallowed
                await asyncio.sleep(self._every)
        finally:
            with contextlib.suppress(*REDIS_UNAVAILABLE):
                async with asyncio.timeout(self._redis_seconds):
                    await withdraw(self._redis, self.name)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse(role: str, name: str, score: float, raw: Mapping[Any, Any]) -> ProcessReport:
    fields = {_text(key): _text(value) for key, value in raw.items()}
    counters: dict[str, float] = {}
    for key, value in fields.items():
        if key in _DESCRIPTIVE:
            continue
        with contextlib.suppress(ValueError):
            counters[key] = float(value)
    try:
        every = float(fields.get("every", _DEFAULT_EVERY))
        pid = int(fields.get("pid", 0))
    except ValueError:
        every, pid = _DEFAULT_EVERY, 0
    return ProcessReport(role, name, fields.get("host", ""), pid, score, every, counters)


async def read_reports(redis: RedisClient) -> list[ProcessReport]:
    """Every process's last report (stale ones included), by role then name.

    A name whose hash expired is left out: the process stopped long enough ago
    that only its place in the sorted set remains.
    """
    roles = list(ROLE_KEYS)
    async with redis.pipeline(transaction=False) as pipe:
        for role in roles:
            _ = pipe.zrevrange(ROLE_KEYS[role][0], 0, MAX_PER_ROLE - 1, withscores=True)
        listed: list[Any] = await pipe.execute()
    names = [(role, _text(name), float(score))
             for role, entries in zip(roles, listed, strict=True) for name, score in entries]
    if not names:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for role, name, _ in names:
            _ = pipe.hgetall(ROLE_KEYS[role][1](name))
        details: list[Any] = await pipe.execute()
    reports = [_parse(role, name, score, raw)
               for (role, name, score), raw in zip(names, details, strict=True) if raw]
    order = {role: index for index, role in enumerate(roles)}
    return sorted(reports, key=lambda r: (order[r.role], r.name))


def totals(reports: list[ProcessReport], now: float) -> dict[str, dict[str, float]]:
    """Each role's counters summed over its fresh processes (stale ones left out)."""
    summed: dict[str, dict[str, float]] = {}
    for report in reports:
        if report.stale(now):
            continue
        role = summed.setdefault(report.role, {})
        for key, value in report.counters.items():
            role[key] = role.get(key, 0.0) + value
    return summed
