"""Registration ids."""

from __future__ import annotations

import time
import uuid

from queueing.ids import format_uuid, uuid7, uuid7_bytes, uuid7_unix_ms


def test_uuid7_has_version_variant_and_time() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= uuid7_unix_ms(value) <= after


def test_ids_sort_by_time() -> None:
    earlier = uuid7_bytes(1_000)
    later = uuid7_bytes(2_000)
    assert earlier < later


def test_ids_are_unique() -> None:
    assert len({uuid7_bytes() for _ in range(10_000)}) == 10_000


def test_format_matches_uuid_text() -> None:
    raw = uuid7_bytes()
    assert format_uuid(raw) == str(uuid.UUID(bytes=raw))
