"""Key names and partition choice."""

from __future__ import annotations

import os

from redis.crc import key_slot

from queueing.keys import (
    ADMISSION_SETTINGS,
    AUDIT_STREAM,
    IDEMPOTENCY_BUCKETS,
    Partition,
    idempotency_expiry,
    partition_for_digest,
    partition_for_idempotency_key,
)


def _slot_tag(key: str) -> str:
    return key[key.index("{") + 1 : key.index("}")]


def test_every_key_of_a_partition_shares_one_hash_tag() -> None:
    part = Partition(3)
    record = part.idempotency("abc", 86_400, 1e9)
    tags = {_slot_tag(k) for k in (part.stream, part.bucket, record.current, record.previous)}
    assert tags == {"p3"}


def test_every_key_of_a_partition_is_in_one_cluster_slot() -> None:
    for part in (Partition(0), Partition(7)):
        record = part.idempotency("k", 86_400, 1e9)
        keys = [part.stream, part.bucket, record.current, record.previous, part.dead_letters,
                part.verification("email"), part.verification("nik"), part.handoff(42, "email"),
                part.lease("drain"), part.lease_epoch("drain"), part.drain_refusals]
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


def test_an_idempotency_record_is_a_short_digest_of_its_key_in_a_bucket_hash() -> None:
    part = Partition(3)
    longest, shortest = (part.idempotency(key, 86_400, 1e9) for key in ("k" * 64, "k"))
    assert len(longest.field) == len(shortest.field) == 12
    assert b"k" * 8 not in longest.field and "k" * 8 not in longest.current
    assert part.idempotency("k", 86_400, 1e9) == shortest
    assert part.idempotency("K", 86_400, 1e9).field != shortest.field
    # Keys spread over the buckets of a period.
    buckets = {part.idempotency(f"key-{i}", 86_400, 1e9).current for i in range(2000)}
    assert len(buckets) > IDEMPOTENCY_BUCKETS * 0.9


def test_an_idempotency_record_is_written_to_this_period_and_read_from_two() -> None:
    part, day = Partition(0), 86_400
    start = 20_000 * day  # a period's first second
    first = part.idempotency("k", day, start + 5)
    assert part.idempotency("k", day, start + day - 1) == first
    # The next period writes a new hash and still reads the one before.
    later = part.idempotency("k", day, start + day)
    assert later.previous == first.current != later.current
    assert idempotency_expiry(day, start + 5) == start + 2 * day
