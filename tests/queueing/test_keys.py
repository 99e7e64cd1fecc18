"""Key names and partition choice."""

from __future__ import annotations

import os

from redis.crc import key_slot

from queueing.keys import (
    ADMISSION_SETTINGS,
    AUDIT_STREAM,
    Partition,
    partition_for_digest,
    partition_for_idempotency_key,
)


def _slot_tag(key: str) -> str:
    return key[key.index("{") + 1 : key.index("}")]


def test_every_key_of_a_partition_shares_one_hash_tag() -> None:
    part = Partition(3)
    tags = {_slot_tag(k) for k in (part.stream, part.bucket, part.idempotency("abc"))}
    assert tags == {"p3"}


def test_every_key_of_a_partition_is_in_one_cluster_slot() -> None:
    for part in (Partition(0), Partition(7)):
        keys = [part.stream, part.bucket, part.idempotency("k"), part.dead_letters,
                part.verification("email"), part.verification("nik"), part.handoff(42)]
        assert len({key_slot(key.encode()) for key in keys}) == 1


def test_settings_and_their_audit_entry_share_a_slot() -> None:
    # They commit in one MULTI, which a Redis Cluster refuses across slots.
    assert key_slot(ADMISSION_SETTINGS.encode()) == key_slot(AUDIT_STREAM.encode())


def test_idempotency_partition_is_stable_across_processes() -> None:
    # crc32 is fixed; Python's hash() would differ per process.
    assert partition_for_idempotency_key("order-42", 8) == partition_for_idempotency_key(
        "order-42", 8
    )
    assert partition_for_idempotency_key("a", 8) != partition_for_idempotency_key("b", 8)


def test_digest_partitions_are_uniform() -> None:
    counts = [0] * 8
    for _ in range(8000):
        counts[partition_for_digest(os.urandom(32), 8)] += 1
    assert min(counts) > 800
    assert max(counts) < 1200


def test_an_idempotency_record_is_named_by_a_short_digest_of_its_key() -> None:
    part = Partition(3)
    longest, shortest = part.idempotency("k" * 64), part.idempotency("k")
    assert len(longest) == len(shortest) == len(part.idempotency("same")) == 36
    assert "k" * 8 not in longest
    assert part.idempotency("k") == shortest and part.idempotency("K") != shortest
