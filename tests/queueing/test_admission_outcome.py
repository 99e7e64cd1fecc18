"""A group whose reply never came: the door finds out what Redis did before it answers.

Each test pauses a Redis of its own (SIGSTOP) after the door sent a group, so
the group sits in Redis's socket and runs when Redis goes on (SIGCONT): from
the door's side, exactly a Redis that took the group and stalled before
replying.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ResponseError

from config.settings import Settings
from gelombang.services import RedisServer
from intake.door import connect_redis
from queueing.admission import (
    AdmissionPolicy,
    AdmissionScript,
    Candidate,
    Decision,
    GroupCall,
    GroupResult,
    Outcome,
    PartitionShare,
)
from queueing.errors import OutcomeUnknown, QueueUnavailable
from queueing.grouping import GroupAdmitter, Shed
from queueing.keys import partitions
from queueing.redis_client import RedisClient
from tests.support import stream_range

PARTS = 2
TIMEOUT = 0.5
CHECK_SECONDS = 1.5
_POLICY = AdmissionPolicy(rate_per_second=1000.0, burst=1000, backlog_high_water=1_000_000,
                          enabled=True, open=True)


@pytest.fixture
async def door_redis(own_redis: RedisServer, test_settings: Settings) -> AsyncIterator[
        RedisClient]:
    """A client of that Redis as the door makes one (a deadline, no retries)."""
    settings = test_settings.model_copy(update={"redis": test_settings.redis.model_copy(
        update={"url": own_redis.url, "cluster": False, "cluster_seeds": [],
                "timeout_seconds": TIMEOUT})})
    client = connect_redis(settings, max_connections=PARTS + 4)
    try:
        yield client
    finally:
        await client.aclose()


def _admitter(redis: RedisClient) -> GroupAdmitter:
    share = PartitionShare.of(_POLICY, PARTS, 86_400)
    return GroupAdmitter(AdmissionScript(redis), partitions(PARTS), lambda: share,
                         group_max=256, pending_max=1000, timeout=TIMEOUT,
                         check_seconds=CHECK_SECONDS)


def _candidates(count: int) -> list[Candidate]:
    # Half with an Idempotency-Key, half without: both must be answered truthfully.
    return [Candidate(os.urandom(16), b"envelope-%d-" % i + os.urandom(8),
                      f"key-{os.urandom(6).hex()}" if i % 2 else None) for i in range(count)]


async def _queued(redis: RedisClient) -> set[bytes]:
    envelopes: set[bytes] = set()
    for partition in partitions(PARTS):
        envelopes.update(fields[b"m"] for _, fields in await stream_range(redis,
                                                                          partition.stream))
    return envelopes


async def _send_while_paused(server: RedisServer, admitter: GroupAdmitter,
                             group: list[Candidate], paused: float) -> list[object]:
    # Warm: the connection is open and the script loaded, so the pause catches the group.
    await admitter.admit(0, _candidates(1)[0])
    server.pause()
    try:
        answers = [asyncio.create_task(admitter.admit(i % PARTS, c))
                   for i, c in enumerate(group)]
        await asyncio.sleep(paused)
    finally:
        server.resume()
    return list(await asyncio.gather(*answers, return_exceptions=True))


async def test_a_group_redis_took_before_stalling_is_answered_as_admitted(
        own_redis: RedisServer, door_redis: RedisClient) -> None:
    # Paused past the door's deadline, then on again: the group ran after all.
    group = _candidates(20)
    answers = await _send_while_paused(own_redis, _admitter(door_redis), group, 2 * TIMEOUT)

    queued = await _queued(door_redis)
    assert {c.envelope for c in group} <= queued  # Redis ran the group when it went on
    for candidate, answer in zip(group, answers, strict=True):
        assert isinstance(answer, Decision), f"a queued registration was answered {answer!r}"
        assert (answer.outcome, answer.registration_id) == (Outcome.ADMITTED,
                                                            candidate.registration_id)


async def test_no_failure_is_answered_for_a_registration_that_was_stored(
        own_redis: RedisServer, door_redis: RedisClient) -> None:
    # However long the pause, a failure answer means nothing was stored.
    for paused in (0.2, 1.0, 4.0):
        group = _candidates(10)
        answers = await _send_while_paused(own_redis, _admitter(door_redis), group, paused)
        queued = await _queued(door_redis)
        for candidate, answer in zip(group, answers, strict=True):
            if isinstance(answer, QueueUnavailable):
                assert candidate.envelope not in queued, (paused, answer)


async def test_a_reply_lost_past_the_check_is_unknown_and_its_key_replays_it(
        own_redis: RedisServer, door_redis: RedisClient) -> None:
    # Paused for longer than the door's deadline and its check together.
    group = _candidates(6)
    admitter = _admitter(door_redis)
    answers = await _send_while_paused(own_redis, admitter, group, TIMEOUT + CHECK_SECONDS + 1.0)

    assert all(isinstance(answer, OutcomeUnknown) for answer in answers), answers
    assert {c.envelope for c in group} <= await _queued(door_redis)
    # The same key again: the original registration, not a second one.
    for index, candidate in enumerate(group):
        if candidate.idempotency_key is not None:  # to its partition, as the door sends it
            again = await admitter.admit(index % PARTS, Candidate(os.urandom(16), b"again",
                                                                  candidate.idempotency_key))
            assert (again.outcome, again.registration_id) == (Outcome.REPLAYED,
                                                              candidate.registration_id)
    assert b"again" not in await _queued(door_redis)


async def test_requests_arriving_while_a_lost_reply_is_checked_are_shed_unsent(
        own_redis: RedisServer, door_redis: RedisClient) -> None:
    admitter = _admitter(door_redis)
    await admitter.admit(0, _candidates(1)[0])
    own_redis.pause()
    try:
        lost = asyncio.create_task(admitter.admit(0, _candidates(1)[0]))
        await asyncio.sleep(TIMEOUT + 0.2)  # the deadline passed: the check is under way
        late = _candidates(3)
        started = time.monotonic()
        # To the partition whose group is being found out (the others carry on).
        shed = await asyncio.gather(*(admitter.admit(0, c) for c in late),
                                    return_exceptions=True)
        assert time.monotonic() - started < 0.1  # at once, not after the check
    finally:
        own_redis.resume()
    assert isinstance(await lost, Decision)
    assert all(isinstance(answer, Shed) for answer in shed), shed
    assert not {c.envelope for c in late} & await _queued(door_redis)


@pytest.mark.both_redis
async def test_a_call_found_not_run_is_fenced_and_never_runs(redis_client: RedisClient) -> None:
    # The door asks before the call ran (it sits in a paused Redis's socket, or
    # in the network): told "not run", the call must then store nothing.
    script = AdmissionScript(redis_client)
    share = PartitionShare.of(_POLICY, PARTS, 86_400)
    partition = partitions(PARTS)[1]
    call = GroupCall(partition, [Candidate(os.urandom(16), b"late", "fenced-key")],
                     partition.admission_outcome("fence-test"))

    assert await script.outcomes([call]) == [None]
    with pytest.raises(ResponseError, match="FENCED"):
        [reply] = await script.admit_groups(share, [call])
        if isinstance(reply, BaseException):  # a cluster hands the failure back
            raise reply
    assert await script.outcomes([call]) == [None]  # asked again: still not run
    assert await redis_client.xlen(partition.stream) == 0
    assert not await redis_client.exists(partition.bucket)  # no token taken
    fresh = GroupCall(partition, [Candidate(os.urandom(16), b"fresh", "fenced-key")],
                      partition.admission_outcome("fence-test-2"))
    [result] = await script.admit_groups(share, [fresh])
    assert isinstance(result, GroupResult)
    assert result.decisions[0].outcome is Outcome.ADMITTED  # the key was never recorded


@pytest.mark.both_redis
async def test_a_call_that_ran_is_found_with_its_decisions(redis_client: RedisClient) -> None:
    script = AdmissionScript(redis_client)
    share = PartitionShare.of(_POLICY, PARTS, 86_400)
    partition = partitions(PARTS)[0]
    first = Candidate(os.urandom(16), b"first", "found-key")
    await script.admit_groups(share, [GroupCall(partition, [first], partition.admission_outcome(
        "earlier"))])
    call = GroupCall(partition, [Candidate(os.urandom(16), b"new", None),
                                 Candidate(os.urandom(16), b"replay", "found-key")],
                     partition.admission_outcome("found"))
    [ran] = await script.admit_groups(share, [call])

    [found] = await script.outcomes([call])
    assert found == ran
    assert isinstance(found, GroupResult)
    assert [d.outcome for d in found.decisions] == [Outcome.ADMITTED, Outcome.REPLAYED]
    assert found.decisions[1].registration_id == first.registration_id
    # Run again (a re-sent call): the same decisions, nothing added.
    assert await script.admit_groups(share, [call]) == [ran]
    assert await redis_client.xlen(partition.stream) == 2
    assert 0 < await redis_client.ttl(partition.admission_outcome("found")) <= 30
