"""Calls to outside services: breaker, back-off, and the shared rate limit."""

from __future__ import annotations

import asyncio
import random
import time

from redis.asyncio import Redis

from gelombang.services import RedisServer
from workers.runtime.retry import backoff_seconds
from workers.verification.breaker import BreakerState, CircuitBreaker
from workers.verification.rate_limit import SharedRateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 10.0, clock)
    breaker.failed()
    breaker.failed()
    breaker.succeeded()  # the run is broken: counting starts again
    breaker.failed()
    breaker.failed()
    assert breaker.permit() == (0.0, False)
    breaker.failed()
    assert breaker.state is BreakerState.OPEN
    assert breaker.permit() == (10.0, False)


def test_an_open_breaker_lets_one_probe_out_after_the_pause() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 10.0, clock)
    breaker.failed()
    clock.now += 9.9
    assert breaker.permit()[0] > 0
    clock.now += 0.1
    assert breaker.permit() == (0.0, True)
    assert breaker.state is BreakerState.HALF_OPEN
    wait, probe = breaker.permit()  # a second caller waits for the probe's verdict
    assert wait > 0 and not probe


def test_a_failed_probe_reopens_and_a_good_one_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 10.0, clock)
    breaker.failed()
    clock.now += 10
    assert breaker.permit() == (0.0, True)
    breaker.failed()
    assert breaker.state is BreakerState.OPEN
    assert breaker.times_opened == 2
    clock.now += 10
    assert breaker.permit() == (0.0, True)
    breaker.succeeded()
    assert breaker.state.value == "closed"
    assert breaker.permit() == (0.0, False)


def test_a_released_probe_lets_the_next_caller_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 1.0, clock)
    breaker.failed()
    clock.now += 1
    assert breaker.permit() == (0.0, True)
    breaker.released()
    assert breaker.permit() == (0.0, True)


def test_a_hold_stops_calls_without_opening() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 10.0, clock)
    breaker.hold(2.0)
    assert breaker.permit() == (2.0, False)
    assert breaker.state is BreakerState.CLOSED
    clock.now += 2.0
    assert breaker.permit() == (0.0, False)


def test_backoff_grows_exponentially_with_jitter_up_to_the_ceiling() -> None:
    rng = random.Random(7)
    for attempt, step in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0), (100, 60.0)]:
        delays = [backoff_seconds(attempt, 1.0, 60.0, rng=rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert max(delays) - min(delays) > step / 4  # jittered, not constant


def test_retry_after_is_a_floor() -> None:
    assert backoff_seconds(1, 1.0, 60.0, retry_after=30.0) == 30.0
    assert backoff_seconds(8, 1.0, 60.0, retry_after=0.5) >= 30.0


async def test_the_shared_limit_holds_across_clients(redis_client: Redis,
                                                   redis_server: RedisServer) -> None:
    # Two limiters (as two processes would have) on one bucket: rate 20/s,
    # burst 1 lets at most 1 + 20·t calls start in t seconds, in total.
    other = Redis.from_url(redis_server.url)
    limits = [SharedRateLimit(redis_client, "test", 20.0, 1),
              SharedRateLimit(other, "test", 20.0, 1)]
    started: list[float] = []

    async def caller(limit: SharedRateLimit) -> None:
        while True:
            await limit.acquire()
            started.append(time.monotonic())

    began = time.monotonic()
    tasks = [asyncio.create_task(caller(limits[i % 2])) for i in range(8)]
    await asyncio.sleep(1.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await other.aclose()
    elapsed = time.monotonic() - began
    assert len(started) <= 1 + 20 * elapsed + 1
    assert len(started) >= 20 * 1.5 * 0.8  # and the limit is not a stall
