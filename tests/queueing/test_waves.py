"""Scheduled waves: schedule, reschedule and cancel rules, the seed, the configured
waves, the wave in force and the line's summary, on real Redis."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from config.settings import WaveConfig
from queueing.keys import AUDIT_STREAM, STANDING_WAVE, WAVES, WaveKeys
from queueing.redis_client import RedisClient
from queueing.waves import (
    WAVE_NAME,
    WaveError,
    WaveSchedule,
    cancel_wave,
    ensure_configured,
    line_summary,
    read_waves,
    schedule_configured,
    schedule_wave,
    wave_in_force,
)
from tests.support import stream_range

pytestmark = pytest.mark.both_redis

NOW = 1_800_000_000
WAVE = WaveSchedule("gelombang-1", NOW + 100, NOW + 200, NOW + 900)


async def schedule(redis: RedisClient, wave: WaveSchedule = WAVE, now: float = NOW) -> bool:
    return await schedule_wave(redis, wave, actor="tester", source="here", now=now)


async def state(redis: RedisClient, wave: str = WAVE.wave) -> dict[str, str]:
    raw: Any = await redis.hgetall(WaveKeys(wave).state)
    return {name.decode(): value.decode() for name, value in raw.items()}


async def audit(redis: RedisClient) -> list[tuple[str, dict[str, Any]]]:
    return [(fields[b"action"].decode(), orjson.loads(fields[b"changes"]))
            for _, fields in await stream_range(redis, AUDIT_STREAM)]


async def test_a_new_wave_gets_a_secret_seed_whose_hash_is_published(
        redis_client: RedisClient) -> None:
    assert await schedule(redis_client) is True
    fields = await state(redis_client)
    seed = bytes.fromhex(fields["seed"])
    assert len(seed) == 32
    assert fields["seed_sha256"] == hashlib.sha256(seed).hexdigest()
    assert (fields["prequeue_from"], fields["opens_at"], fields["closes_at"]) == (
        str(NOW + 100), str(NOW + 200), str(NOW + 900))
    listed: Any = await redis_client.hget(WAVES, WAVE.wave)
    assert orjson.loads(listed) == WAVE.fields()
    assert await read_waves(redis_client) == [WAVE]
    # Audited with the schedule, never with the seed.
    [(action, details)] = await audit(redis_client)
    assert action == "waves.schedule"
    assert details == {"wave": WAVE.wave, **WAVE.fields(), "created": True}
    [(_, entry)] = await stream_range(redis_client, AUDIT_STREAM)
    assert entry[b"actor"] == b"tester" and entry[b"source"] == b"here"
    assert fields["seed"].encode() not in b"".join(entry.values())


async def test_a_reschedule_before_the_prequeue_keeps_the_seed(redis_client: RedisClient) -> None:
    await schedule(redis_client)
    before = await state(redis_client)
    later = WaveSchedule(WAVE.wave, NOW + 300, NOW + 400, NOW + 500)
    assert await schedule(redis_client, later, now=NOW + 99) is False
    after = await state(redis_client)
    assert (after["seed"], after["seed_sha256"]) == (before["seed"], before["seed_sha256"])
    assert after["opens_at"] == str(NOW + 400)
    assert await read_waves(redis_client) == [later]
    assert [details["created"] for _, details in await audit(redis_client)] == [True, False]


async def test_a_started_wave_cannot_be_rescheduled(redis_client: RedisClient) -> None:
    await schedule(redis_client)
    later = WaveSchedule(WAVE.wave, NOW + 300, NOW + 400, NOW + 500)
    with pytest.raises(WaveError) as refused:
        await schedule(redis_client, later, now=NOW + 100)
    assert refused.value.code == "wave_started"
    assert await read_waves(redis_client) == [WAVE]
    assert (await state(redis_client))["opens_at"] == str(NOW + 200)
    # The schedule it has already is no change: allowed (a PUT repeated).
    assert await schedule(redis_client, WAVE, now=NOW + 150) is False


@pytest.mark.parametrize(("wave", "code"), [
    (WaveSchedule("w", NOW + 201, NOW + 200, NOW + 900), "invalid_schedule"),
    (WaveSchedule("w", NOW + 100, NOW + 200, NOW + 200), "invalid_schedule"),
    (WaveSchedule("w", NOW - 300, NOW - 200, NOW), "already_closed"),
    (WaveSchedule(STANDING_WAVE, NOW + 100, NOW + 200, NOW + 900), "reserved_name"),
    (WaveSchedule("a}b", NOW + 100, NOW + 200, NOW + 900), "invalid_name"),
    (WaveSchedule("A", NOW + 100, NOW + 200, NOW + 900), "invalid_name"),
])
async def test_a_bad_schedule_is_refused_and_nothing_written(
        redis_client: RedisClient, wave: WaveSchedule, code: str) -> None:
    with pytest.raises(WaveError) as refused:
        await schedule(redis_client, wave)
    assert refused.value.code == code
    assert await redis_client.exists(WAVES, AUDIT_STREAM, WaveKeys(wave.wave).state) == 0


async def test_a_prequeue_start_equal_to_the_opening_is_allowed(
        redis_client: RedisClient) -> None:
    assert await schedule(redis_client, WaveSchedule("now", NOW, NOW, NOW + 1))


async def test_a_wave_is_cancelled_before_its_opening_with_every_key(
        redis_client: RedisClient) -> None:
    await schedule(redis_client)
    keys = WaveKeys(WAVE.wave)
    # In its pre-queue: someone joined.
    await redis_client.zadd(keys.draw, {b"l" * 16 + b"t" * 16: 0})
    await redis_client.hset(keys.tickets, "p:x", "0")
    assert await cancel_wave(redis_client, WAVE.wave, actor="tester", source="here",
                             now=NOW + 150) == WAVE
    assert await read_waves(redis_client) == []
    assert await redis_client.exists(*keys.all()) == 0
    assert [action for action, _ in await audit(redis_client)] == ["waves.schedule",
                                                                  "waves.cancel"]
    assert (await audit(redis_client))[-1][1] == {"wave": WAVE.wave, **WAVE.fields()}


async def test_an_open_or_unknown_wave_cannot_be_cancelled(redis_client: RedisClient) -> None:
    await schedule(redis_client)
    with pytest.raises(WaveError) as refused:
        await cancel_wave(redis_client, WAVE.wave, actor="t", source="s", now=NOW + 200)
    assert refused.value.code == "wave_open"
    with pytest.raises(WaveError) as unknown:
        await cancel_wave(redis_client, "nope", actor="t", source="s", now=NOW)
    assert unknown.value.code == "unknown_wave"
    assert await read_waves(redis_client) == [WAVE]
    assert len(await audit(redis_client)) == 1


async def test_a_wave_scheduled_again_after_a_cancel_starts_afresh(
        redis_client: RedisClient) -> None:
    await schedule(redis_client)
    first = (await state(redis_client))["seed"]
    await cancel_wave(redis_client, WAVE.wave, actor="t", source="s", now=NOW)
    keys = WaveKeys(WAVE.wave)
    # A door's tick that had not seen the cancel yet writes a counter and a join.
    await redis_client.hset(keys.state, "tail", "3")
    await redis_client.zadd(keys.draw, {b"l" * 16 + b"t" * 16: 0})
    assert await schedule(redis_client) is True
    fields = await state(redis_client)
    assert fields["seed"] != first and "tail" not in fields
    assert await redis_client.exists(keys.draw) == 0


async def test_two_schedulers_of_a_new_wave_agree_on_one_seed(redis_client: RedisClient) -> None:
    created = await asyncio.gather(*(schedule(redis_client) for _ in range(4)))
    assert created.count(True) >= 1
    fields = await state(redis_client)
    assert fields["seed_sha256"] == hashlib.sha256(bytes.fromhex(fields["seed"])).hexdigest()
    assert await read_waves(redis_client) == [WAVE]


def configured(wave: str, start: int, opens: int, closes: int) -> WaveConfig:
    return WaveConfig(wave=wave, prequeue_from=start, opens_at=opens, closes_at=closes)


async def test_configured_waves_are_scheduled_once(redis_client: RedisClient) -> None:
    waves = [configured("a", NOW + 10, NOW + 20, NOW + 30),
             configured("b", NOW + 40, NOW + 50, NOW + 60),
             configured("old", NOW - 30, NOW - 20, NOW - 10)]
    assert await ensure_configured(redis_client, waves, now=NOW) == ["a", "b"]
    seeds = {w: (await state(redis_client, w))["seed"] for w in ("a", "b")}
    # An operator moved "a"; a door starting later leaves it as it is.
    moved = WaveSchedule("a", NOW + 11, NOW + 21, NOW + 31)
    await schedule(redis_client, moved)
    assert await ensure_configured(redis_client, waves, now=NOW + 1) == []
    assert await read_waves(redis_client) == [moved, WaveSchedule("b", NOW + 40, NOW + 50,
                                                                  NOW + 60)]
    assert {w: (await state(redis_client, w))["seed"] for w in ("a", "b")} == seeds
    entries = await stream_range(redis_client, AUDIT_STREAM)
    assert [(f[b"actor"], f[b"source"]) for _, f in entries][:2] == [(b"config", b"config")] * 2
    assert len(entries) == 3
    assert await ensure_configured(redis_client, []) == []


@pytest.mark.parametrize("name", ["a", "gelombang-1", "0-", "a" * 32, "a" * 33, "-a", "A",
                                  "a_b", "a}b", ""])
def test_a_wave_name_is_what_the_configuration_takes(name: str) -> None:
    try:
        WaveConfig(wave=name, prequeue_from=1, opens_at=2, closes_at=3)
    except ValueError:
        configured = False
    else:
        configured = True
    assert bool(WAVE_NAME.fullmatch(name)) == configured


async def test_configured_waves_at_a_door_start_never_stop_it(
        redis_client: RedisClient, caplog: pytest.LogCaptureFixture) -> None:
    waves = [configured("a", NOW + 10, NOW + 20, 4_000_000_000)]
    unreachable = Redis.from_url("redis://127.0.0.1:9", socket_connect_timeout=0.5)
    try:
        await schedule_configured(unreachable, waves, 1.0)
    finally:
        await unreachable.aclose()
    # A list entry written by hand that is not a schedule is left out, not fatal.
    await redis_client.hset(WAVES, "odd", b"[]")
    await schedule_configured(redis_client, waves, 1.0)
    assert [w.wave for w in await read_waves(redis_client)] == ["a"]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "configured waves not scheduled (ConnectionError)",
        "a wave listed in gelombang:{admin}:waves is not a schedule: left out",
        "a wave listed in gelombang:{admin}:waves is not a schedule: left out"]


def test_the_wave_in_force_is_the_latest_started_not_closed() -> None:
    first = WaveSchedule("first", 100, 200, 1000)
    second = WaveSchedule("second", 500, 600, 700)
    waves = [first, second]
    assert wave_in_force(waves, 99) is None  # the standing line
    assert wave_in_force(waves, 100) == first  # the pre-queue counts
    assert wave_in_force(waves, 499) == first
    assert wave_in_force(waves, 500) == second  # started later: it wins
    assert wave_in_force(waves, 699) == second
    assert wave_in_force(waves, 700) == first  # second closed
    assert wave_in_force(waves, 1000) is None
    assert wave_in_force([], 5) is None
    assert [first.phase(t) for t in (99, 100, 200, 1000)] == [
        "scheduled", "prequeue", "open", "closed"]


async def test_the_summary_counts_the_line_and_keeps_the_seed_until_the_opening(
        redis_client: RedisClient) -> None:
    await schedule(redis_client)
    keys = WaveKeys(WAVE.wave)
    await redis_client.zadd(keys.draw, {bytes([n]) * 32: 0 for n in range(5)})
    before = await line_summary(redis_client, WAVE.wave, now=NOW + 199)
    fields = await state(redis_client)
    assert (before.seed, before.seed_sha256) == (None, fields["seed_sha256"])
    assert (before.schedule, before.prequeue, before.waiting) == (WAVE, 5, 0)
    assert before.phase(NOW + 199) == "prequeue"
    # 1 s to the opening, then 5 people at 5 a second.
    assert before.eta_of_last_seconds(5.0, NOW + 199) == 2.0
    # The line's script drew 5, then served 4 of 20 positions; 10 and 12 left, 3 too.
    await redis_client.hset(keys.state, mapping={"drawn": 5, "tail": 20, "served": 4,
                                                 "expired": 2, "used": 3})
    await redis_client.zadd(keys.gone, {b"3": 3, b"10": 10, b"12": 12})
    after = await line_summary(redis_client, WAVE.wave, now=NOW + 200)
    assert after.seed == fields["seed"]
    assert (after.drawn, after.tail, after.served, after.expired, after.used) == (5, 20, 4, 2, 3)
    assert (after.gone_ahead, after.waiting) == (2, 14)
    assert after.eta_of_last_seconds(7.0, NOW + 200) == 2.0
    assert after.eta_of_last_seconds(0.0, NOW + 200) is None


async def test_the_standing_line_has_no_schedule_and_no_seed(redis_client: RedisClient) -> None:
    await redis_client.hset(WaveKeys(STANDING_WAVE).state, mapping={"tail": 3, "served": 1})
    summary = await line_summary(redis_client, STANDING_WAVE, now=NOW)
    assert (summary.schedule, summary.seed, summary.seed_sha256) == (None, None, None)
    assert (summary.waiting, summary.phase(NOW)) == (2, "open")
    empty = await line_summary(redis_client, "never", now=NOW)
    assert (empty.tail, empty.served, empty.waiting, empty.prequeue) == (0, 0, 0, 0)
