"""queueing/scripts.py: the direct round trip keeps its connection in step with its replies."""

from __future__ import annotations

import asyncio

import hiredis
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from queueing.redis_client import RedisClient, is_cluster
from queueing.scripts import PipelinedScript, ScriptCall, direct_round_trip


def packed(*command: str | bytes | int | float) -> bytes:
    result: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return result


@pytest.fixture
def one_server(redis_client: RedisClient) -> Redis:
    if is_cluster(redis_client):
        pytest.skip("the direct round trip is for one server; a cluster keeps redis-py's calls")
    assert isinstance(redis_client, Redis)
    return redis_client


async def test_every_reply_comes_back_in_order(one_server: Redis) -> None:
    replies = await direct_round_trip(one_server, [
        packed("SET", "a", b"1"), packed("INCR", "n"), packed("GET", "a"), packed("GET", "none")])
    assert replies == [b"OK", 1, b"1", None]


async def test_an_error_reply_is_raised_after_every_reply_is_read(one_server: Redis) -> None:
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await direct_round_trip(one_server, [
            packed("SET", "s", b"x"), packed("LPUSH", "s", b"y"), packed("INCR", "after")])
    assert await one_server.get("after") == b"1"  # the call behind the error ran
    # The connection was left in step: the next round trip reads its own replies.
    assert await direct_round_trip(one_server, [packed("GET", "after")]) == [b"1"]


async def test_a_round_trip_cancelled_mid_read_leaves_no_reply_for_the_next(
        one_server: Redis) -> None:
    one_server.connection_pool.max_connections = 1  # the next call must reuse the same slot
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            # Redis answers after 0.5 s: the reply arrives after the caller gave up.
            await direct_round_trip(one_server, [packed("BLPOP", "nothing", 0.5)])
    await asyncio.sleep(0.6)
    assert await direct_round_trip(one_server, [packed("PING")]) == [b"PONG"]


async def test_a_direct_script_call_answers_as_a_pipelined_one(one_server: Redis) -> None:
    source = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}"
    calls: list[ScriptCall] = [(("k1",), (b"v1", 1)), (("k2",), ("v2", 41))]
    direct = await PipelinedScript(one_server, source, direct=True).run_all(calls)
    pipelined = await PipelinedScript(one_server, source).run_all(calls)
    assert direct == pipelined == [[b"k1", b"v1", 2], [b"k2", b"v2", 42]]
