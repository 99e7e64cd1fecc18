"""The admission script and group commit, against a real Redis."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import pytest
from redis.asyncio import Redis

from queueing.admission import AdmissionPolicy, AdmissionScript, Candidate, Outcome, PartitionShare
from queueing.errors import QueueUnavailable
from queueing.grouping import GroupAdmitter, GroupStats, Overloaded
from queueing.keys import partitions
from queueing.redis_client import RedisClient

# Each test runs on one Redis server and on a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.both_redis

PARTS = 4


def _candidates(count: int, key: str | None = None) -> list[Candidate]:
    return [Candidate(os.urandom(16), b"envelope-%d" % i, key) for i in range(count)]


def _admitter(
    redis: RedisClient,
    policy: AdmissionPolicy,
    *,
    group_max: int = 256,
    pending_max: int = 100_000,
    timeout: float = 1.0,
    stats: list[GroupStats] | None = None,
) -> GroupAdmitter:
    share = PartitionShare.of(policy, PARTS, 86_400)
    sink = stats if stats is not None else []
    return GroupAdmitter(AdmissionScript(redis), partitions(PARTS), lambda: share,
                         group_max=group_max, pending_max=pending_max, timeout=timeout,
                         check_seconds=1.0, observe=sink.append)


def _policy(rate: float = 0.001, burst: int = 40, high_water: int = 1_000_000,
            enabled: bool = True, is_open: bool = True) -> AdmissionPolicy:
    return AdmissionPolicy(rate_per_second=rate, burst=burst, backlog_high_water=high_water,
                           enabled=enabled, open=is_open)


async def _stream_total(redis: RedisClient) -> int:
    return sum([await redis.xlen(p.stream) for p in partitions(PARTS)])


async def test_burst_admits_exactly_the_burst(redis_client: RedisClient) -> None:
    admitter = _admitter(redis_client, _policy(burst=40))
    decisions = await asyncio.gather(
        *(admitter.admit(i % PARTS, c) for i, c in enumerate(_candidates(400)))
    )
    counts = Counter(d.outcome for d in decisions)
    assert counts == {Outcome.ADMITTED: 40, Outcome.LIMITED: 360}
    assert await _stream_total(redis_client) == 40


async def test_refill_over_time_is_exact(redis_client: RedisClient) -> None:
    rate, burst = 200.0, 200
    admitter = _admitter(redis_client, _policy(rate=rate, burst=burst))
    started = time.monotonic()
    first_answered = last_asked = 0.0
    admitted = 0
    while time.monotonic() - started < 1.0:
        last_asked = time.monotonic()
        decisions = await asyncio.gather(
            *(admitter.admit(i % PARTS, c) for i, c in enumerate(_candidates(100)))
        )
        first_answered = first_answered or time.monotonic()
        admitted += sum(d.outcome is Outcome.ADMITTED for d in decisions)
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    # Upper bound is exact: burst + rate * elapsed. The lower bound counts only
    # the refill between the first round's answer and the last round's start
    # (every round asks for more than refilled), less one fractional token per
    # partition.
    assert admitted <= burst + rate * elapsed + 1
    assert admitted >= burst + rate * (last_asked - first_answered) - PARTS


async def test_limited_requests_get_spread_retry_delays(redis_client: RedisClient) -> None:
    admitter = _admitter(redis_client, _policy(rate=4.0, burst=4))
    decisions = await asyncio.gather(*(admitter.admit(0, c) for c in _candidates(5)))
    waits = [d.retry_after_ms for d in decisions if d.outcome is Outcome.LIMITED]
    # Partition 0 holds 1 token at 1 token/s: the 4 refused wait ~1, 2, 3, 4 s.
    assert len(waits) == 4
    assert waits == sorted(waits)
    assert 900 <= waits[0] <= 1000
    assert 3900 <= waits[-1] <= 4000


async def test_idempotency_key_replays_without_token_or_entry(redis_client: RedisClient) -> None:
    admitter = _admitter(redis_client, _policy(burst=PARTS))  # one token per partition
    first = _candidates(1, key="abc")[0]
    part = 1
    decision = await admitter.admit(part, first)
    assert decision.outcome is Outcome.ADMITTED
    # The partition's bucket is now empty, yet a replay is answered.
    again = await admitter.admit(part, Candidate(os.urandom(16), b"other body", "abc"))
    assert again.outcome is Outcome.REPLAYED
    assert again.registration_id == first.registration_id
    assert await redis_client.xlen(partitions(PARTS)[part].stream) == 1


async def test_concurrent_same_key_requests_get_one_id(redis_client: RedisClient) -> None:
    admitter = _admitter(redis_client, _policy(burst=1000), group_max=7)
    decisions = await asyncio.gather(*(admitter.admit(2, c) for c in _candidates(50, key="k")))
    ids = {d.registration_id for d in decisions}
    assert len(ids) == 1
    assert Counter(d.outcome for d in decisions) == {Outcome.ADMITTED: 1, Outcome.REPLAYED: 49}
    assert await _stream_total(redis_client) == 1


async def test_idempotency_record_expires(redis_client: RedisClient) -> None:
    admitter = _admitter(redis_client, _policy())
    await admitter.admit(0, _candidates(1, key="ttl")[0])
    record = partitions(PARTS)[0].idempotency("ttl", 86_400, time.time())
    assert await redis_client.hexists(record.current, record.field)
    # Its hash lives to the end of the next day: the record is kept 24 to 48 h.
    ttl = await redis_client.ttl(record.current)
    assert 86_400 < ttl <= 2 * 86_400


async def test_a_record_of_the_previous_period_still_replays(redis_client: RedisClient) -> None:
    first = _candidates(1, key="old")[0]
    part = partitions(PARTS)[1]
    record = part.idempotency("old", 86_400, time.time())
    await redis_client.hset(record.previous, record.field, first.registration_id)

    again = await _admitter(redis_client, _policy()).admit(1, _candidates(1, key="old")[0])

    assert again.outcome is Outcome.REPLAYED
    assert again.registration_id == first.registration_id
    assert await redis_client.xlen(part.stream) == 0


async def test_doors_with_skewed_clocks_admit_a_key_once_at_a_period_boundary(
    redis_client: RedisClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two doors whose clocks differ by 2 s, just before an idempotency period
    # ends: by its own clock the fast one is in the next period already, the
    # slow one still in the one before. A short period brings a boundary near.
    ttl = 3
    share = PartitionShare.of(_policy(burst=1000), PARTS, ttl)
    fast, slow = (GroupAdmitter(AdmissionScript(redis_client), partitions(PARTS), lambda: share,
                                group_max=256, pending_max=100, timeout=1.0, check_seconds=1.0)
                  for _ in range(2))
    real = time.time
    # Redis runs on this machine: its clock is the test's. 0.8 s before a boundary.
    await asyncio.sleep((ttl - 0.8 - real() % ttl) % ttl)
    monkeypatch.setattr(time, "time", lambda: real() + 1.0)
    first = await fast.admit(0, Candidate(os.urandom(16), b"first", "skewed"))
    monkeypatch.setattr(time, "time", lambda: real() - 1.0)
    second = await slow.admit(0, Candidate(os.urandom(16), b"second", "skewed"))
    monkeypatch.setattr(time, "time", real)

    assert real() % ttl > ttl - 0.8, "the boundary passed during the test: too slow a machine"
    assert first.outcome is Outcome.ADMITTED
    assert (second.outcome, second.registration_id) == (Outcome.REPLAYED, first.registration_id)
    assert await redis_client.xlen(partitions(PARTS)[0].stream) == 1


async def test_backlog_high_water_sheds(redis_client: RedisClient) -> None:
    admitter = _admitter(redis_client, _policy(burst=1000, high_water=2 * PARTS))
    decisions = await asyncio.gather(*(admitter.admit(0, c) for c in _candidates(5)))
    assert Counter(d.outcome for d in decisions) == {Outcome.ADMITTED: 2, Outcome.BACKLOG_FULL: 3}


async def test_closed_intake_refuses_but_replays(redis_client: RedisClient) -> None:
    open_admitter = _admitter(redis_client, _policy())
    known = _candidates(1, key="known")[0]
    await open_admitter.admit(0, known)
    closed = _admitter(redis_client, _policy(is_open=False))
    assert (await closed.admit(0, _candidates(1)[0])).outcome is Outcome.CLOSED
    replay = await closed.admit(0, Candidate(os.urandom(16), b"x", "known"))
    assert replay.outcome is Outcome.REPLAYED
    assert replay.registration_id == known.registration_id


async def test_disabled_limit_admits_all_within_backlog(redis_client: RedisClient) -> None:
    admitter = _admitter(redis_client, _policy(burst=1, enabled=False, high_water=400))
    decisions = await asyncio.gather(
        *(admitter.admit(i % PARTS, c) for i, c in enumerate(_candidates(500)))
    )
    assert Counter(d.outcome for d in decisions) == {Outcome.ADMITTED: 400,
                                                     Outcome.BACKLOG_FULL: 100}


async def test_requests_arriving_together_share_round_trips(redis_client: RedisClient) -> None:
    stats: list[GroupStats] = []
    admitter = _admitter(redis_client, _policy(burst=10_000), stats=stats)
    await asyncio.gather(*(admitter.admit(i % PARTS, c) for i, c in enumerate(_candidates(1000))))
    assert sum(s.size for s in stats) == 1000
    # Every partition's group rides in the same round trip: 250 per partition
    # fit one group of at most 256.
    assert len(stats) == 1


async def test_a_redis_that_lost_its_scripts_is_reloaded(redis_client: RedisClient) -> None:
    admitter = _admitter(redis_client, _policy(burst=10))
    assert (await admitter.admit(0, _candidates(1)[0])).outcome is Outcome.ADMITTED
    await redis_client.script_flush()
    assert (await admitter.admit(1, _candidates(1)[0])).outcome is Outcome.ADMITTED
    assert await _stream_total(redis_client) == 2


async def test_group_size_is_bounded(redis_client: RedisClient) -> None:
    stats: list[GroupStats] = []
    admitter = _admitter(redis_client, _policy(burst=10_000), group_max=16, stats=stats)
    await asyncio.gather(*(admitter.admit(0, c) for c in _candidates(100)))
    assert max(s.size for s in stats) == 16


async def test_pending_bound_refuses_at_once(redis_client: RedisClient) -> None:
    admitter = _admitter(redis_client, _policy(burst=10_000), pending_max=10)
    results = await asyncio.gather(
        *(admitter.admit(0, c) for c in _candidates(30)), return_exceptions=True
    )
    assert sum(isinstance(r, Overloaded) for r in results) == 20
    # Shed before anything was sent: of the refused, nothing is stored.
    assert await _stream_total(redis_client) == 10


async def test_unreachable_redis_fails_fast() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    admitter = _admitter(dead, _policy(), timeout=0.8)
    started = time.monotonic()
    with pytest.raises(QueueUnavailable):
        await admitter.admit(0, _candidates(1)[0])
    assert time.monotonic() - started < 1.0
    await dead.aclose()
