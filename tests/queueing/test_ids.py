"""Registration ids."""

from __future__ import annotations

import time
import uuid

from queueing.ids import (
    Provenance,
    RegistrationIds,
    format_uuid,
    uuid7,
    uuid7_bytes,
    uuid7_unix_ms,
)


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


KEY = bytes(range(32))
WINDOW = (1_700_000_000_000, 1_750_000_000_000)


def test_issued_ids_are_uuid7_and_recognised() -> None:
    ids = RegistrationIds(KEY)
    before = time.time_ns() // 1_000_000
    raw = ids.issue()
    value = uuid.UUID(bytes=raw)
    assert (value.version, value.variant) == (7, uuid.RFC_4122)
    assert before <= uuid7_unix_ms(value) <= time.time_ns() // 1_000_000
    assert ids.provenance(raw) is Provenance.ISSUED
    # Another door of the deployment (same key) recognises it; another deployment does not.
    assert RegistrationIds(KEY).provenance(raw) is Provenance.ISSUED
    assert RegistrationIds(bytes(32)).provenance(raw) is Provenance.NEVER


def test_issued_ids_are_unique_and_sort_by_time() -> None:
    ids = RegistrationIds(KEY)
    assert len({ids.issue() for _ in range(10_000)}) == 10_000
    assert ids.issue(1_000) < ids.issue(2_000)


def test_any_changed_bit_makes_an_id_never_issued() -> None:
    ids = RegistrationIds(KEY)
    raw = ids.issue()
    for bit in range(128):
        changed = (int.from_bytes(raw, "big") ^ (1 << bit)).to_bytes(16, "big")
        assert ids.provenance(changed) is Provenance.NEVER, bit


def test_unchecked_ids_are_legacy_only_inside_the_window() -> None:
    ids = RegistrationIds(KEY, WINDOW)
    assert ids.provenance(uuid7_bytes(WINDOW[0])) is Provenance.LEGACY
    assert ids.provenance(uuid7_bytes(WINDOW[1] - 1)) is Provenance.LEGACY
    for outside in (WINDOW[0] - 1, WINDOW[1], time.time_ns() // 1_000_000 + 86_400_000):
        assert ids.provenance(uuid7_bytes(outside)) is Provenance.NEVER, outside
    # Inside the window but not a UUIDv7: never one of ours.
    v4 = bytearray(uuid7_bytes(WINDOW[0] + 1))
    v4[6] = 0x40 | (v4[6] & 0x0F)
    assert ids.provenance(bytes(v4)) is Provenance.NEVER
    assert ids.provenance(ids.issue(WINDOW[0] + 1)) is Provenance.ISSUED
    assert RegistrationIds(KEY).provenance(uuid7_bytes(WINDOW[0])) is Provenance.NEVER
