"""Calls sent in groups, one group in flight at a time (queueing/call_groups.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from queueing.call_groups import CallGroups


async def test_a_burst_goes_in_a_few_round_trips_and_each_gets_its_reply() -> None:
    sent: list[list[int]] = []

    async def send(group: Sequence[int]) -> list[int]:
        sent.append(list(group))
        await asyncio.sleep(0.01)
        return [item * 10 for item in group]

    groups: CallGroups[int, int] = CallGroups(send, group_max=40)
    replies = await asyncio.gather(*(groups.call(item) for item in range(100)))
    assert replies == [item * 10 for item in range(100)]
    # All were waiting before the first round trip left: groups of at most 40.
    assert [len(group) for group in sent] == [40, 40, 20]


async def test_a_failed_round_trip_fails_its_group_only() -> None:
    calls = 0

    async def send(group: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise ConnectionError("down")
        return list(group)

    groups: CallGroups[int, int] = CallGroups(send, group_max=1)
    first = asyncio.create_task(groups.call(1))
    second = asyncio.create_task(groups.call(2))
    with pytest.raises(ConnectionError):
        await first
    assert await second == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_others_round_trip() -> None:
    release = asyncio.Event()

    async def send(group: Sequence[int]) -> list[int]:
        await release.wait()
        return list(group)

    groups: CallGroups[int, int] = CallGroups(send)
    impatient = asyncio.create_task(groups.call(1))
    patient = asyncio.create_task(groups.call(2))
    await asyncio.sleep(0)
    impatient.cancel()
    release.set()
    assert await patient == 2
    with pytest.raises(asyncio.CancelledError):
        await impatient
