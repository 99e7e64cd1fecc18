"""The drain's acknowledgement: XACK, then trim up to the oldest pending entry."""

from __future__ import annotations

from typing import Any

from queueing.keys import STORE_GROUP, Partition
from queueing.redis_client import RedisClient
from workers.runtime.acknowledge import Acknowledger

STREAM = Partition(0).stream


async def ack(redis: RedisClient, ids: list[bytes]) -> int:
    return await Acknowledger(redis).acknowledge(Partition(0), ids)


async def read(redis: RedisClient, consumer: str, count: int) -> list[bytes]:
    reply: Any = await redis.xreadgroup(STORE_GROUP, consumer, {STREAM: ">"}, count=count)
    return [entry_id for entry_id, _ in reply[0][1]]


async def remaining(redis: RedisClient) -> list[bytes]:
    entries: Any = await redis.xrange(STREAM)
    return [entry_id for entry_id, _ in entries]


async def test_entries_leave_only_when_everything_older_is_acknowledged(
    redis_client: RedisClient,
) -> None:
    added = [await redis_client.xadd(STREAM, {"m": str(n)}) for n in range(6)]
    await redis_client.xgroup_create(STREAM, STORE_GROUP, id="0")
    first, second = await read(redis_client, "a", 2), await read(redis_client, "b", 2)

    # The later batch is done first: the earlier one, still in hand, keeps it.
    assert await ack(redis_client, second) == 2
    assert await remaining(redis_client) == added
    assert (await redis_client.xpending(STREAM, STORE_GROUP))["pending"] == 2

    # Both done: what was delivered goes; what was never delivered stays.
    assert await ack(redis_client, first) == 2
    assert await remaining(redis_client) == added[4:]

    assert await ack(redis_client, await read(redis_client, "a", 10)) == 2
    assert await remaining(redis_client) == []
    assert await redis_client.xlen(STREAM) == 0


async def test_acknowledging_again_counts_nothing_and_keeps_new_entries(
    redis_client: RedisClient,
) -> None:
    await redis_client.xgroup_create(STREAM, STORE_GROUP, id="0", mkstream=True)
    await redis_client.xadd(STREAM, {"m": "0"})
    batch = await read(redis_client, "a", 10)
    assert await ack(redis_client, batch) == 1
    later = await redis_client.xadd(STREAM, {"m": "1"})

    assert await ack(redis_client, batch) == 0
    assert await remaining(redis_client) == [later]


async def test_a_batch_larger_than_one_xack_call_is_acknowledged_whole(
    redis_client: RedisClient,
) -> None:
    await redis_client.xgroup_create(STREAM, STORE_GROUP, id="0", mkstream=True)
    async with redis_client.pipeline(transaction=False) as pipe:
        for n in range(2500):
            _ = pipe.xadd(STREAM, {"m": str(n)})
        await pipe.execute()

    assert await ack(redis_client, await read(redis_client, "a", 2500)) == 2500
    assert await redis_client.xlen(STREAM) == 0
