"""The door's admission facade: the partition it picks, and closed intake without Redis."""

from __future__ import annotations

import datetime

import pytest

from config.settings import Settings
from intake.door import configured_policy
from intake.validation import validate_registration
from loadtest.registrants import RegistrantFactory
from queueing.admission import AdmissionScript, Candidate, Decision, Outcome
from queueing.envelope import STREAM_FIELD, Envelope, PersonalData
from queueing.grouping import GroupAdmitter
from queueing.intake_admission import IntakeAdmission, Sealing, keyed_partition, partition_of
from queueing.keys import partition_for_digest, partition_for_idempotency_key, partitions
from queueing.live_settings import LiveAdmission
from queueing.redis_client import RedisClient
from tests.intake.door_helpers import with_admission
from tests.support import stream_range

pytestmark = pytest.mark.both_redis

PARTS = 4


def test_a_keyed_request_goes_by_its_key_and_any_other_by_its_nik_hash() -> None:
    digest = bytes(range(32))
    assert partition_of(digest, None, PARTS) == partition_for_digest(digest, PARTS)
    assert partition_of(digest, "k-1", PARTS) == partition_for_idempotency_key("k-1", PARTS)
    assert keyed_partition("k-1", PARTS) == partition_of(b"", "k-1", PARTS)


class _Unreachable(GroupAdmitter):
    """An admitter that fails the test if a candidate ever reaches it."""

    async def admit(self, partition_index: int, candidate: Candidate) -> Decision:
        raise AssertionError("sent to Redis")


def _admission(redis: RedisClient, settings: Settings, *, is_open: bool = True,
               admitter_type: type[GroupAdmitter] = GroupAdmitter) -> IntakeAdmission:
    live = LiveAdmission(redis, configured_policy(with_admission(settings, open=is_open)),
                         PARTS, 60)
    admitter = admitter_type(AdmissionScript(redis), partitions(PARTS), live.share,
                             group_max=64, pending_max=1000, timeout=1.0, check_seconds=1.0,
                             observe=lambda _: None)
    return IntakeAdmission(Sealing.of(settings.keys), live, admitter, PARTS)


def _person(registrants: RegistrantFactory) -> PersonalData:
    checked = validate_registration(registrants.make().body(), datetime.date.today())
    assert isinstance(checked, PersonalData)
    return checked


async def _entries(redis: RedisClient) -> dict[int, list[Envelope]]:
    found: dict[int, list[Envelope]] = {}
    for partition in partitions(PARTS):
        for _, fields in await stream_range(redis, partition.stream):
            found.setdefault(partition.index, []).append(Envelope.decode(fields[STREAM_FIELD]))
    return found


async def test_submit_queues_the_sealed_registration_in_the_partition_the_rule_picks(
    redis_client: RedisClient, test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    admission = _admission(redis_client, test_settings)
    plain = await admission.submit(_person(registrants), None)
    keyed = await admission.submit(_person(registrants), "facade-key")
    await admission.close()

    assert (plain.outcome, keyed.outcome) == (Outcome.ADMITTED, Outcome.ADMITTED)
    entries = await _entries(redis_client)
    placed = {e.registration_id: (index, e) for index, group in entries.items() for e in group}
    assert plain.registration_id is not None and keyed.registration_id is not None
    index, envelope = placed[plain.registration_id]
    assert index == partition_of(envelope.nik_hash, None, PARTS)
    assert placed[keyed.registration_id][0] == keyed_partition("facade-key", PARTS)


async def test_closed_intake_decides_an_unkeyed_request_without_redis(
    redis_client: RedisClient, test_settings: Settings, registrants: RegistrantFactory,
) -> None:
    admission = _admission(redis_client, test_settings, is_open=False,
                           admitter_type=_Unreachable)

    decision = await admission.submit(_person(registrants), None)

    assert decision.outcome is Outcome.CLOSED
