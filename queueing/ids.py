"""Registration ids: UUID version 7, so ids sort by creation time."""

from __future__ import annotations

import os
import time
import uuid


def uuid7_bytes(unix_ms: int | None = None) -> bytes:
    """A new UUIDv7 (RFC 9562) as 16 bytes: 48-bit Unix ms, version, variant, random."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    raw = bytearray(ms.to_bytes(6, "big") + os.urandom(10))
    raw[6] = 0x70 | (raw[6] & 0x0F)
    raw[8] = 0x80 | (raw[8] & 0x3F)
    return bytes(raw)


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """A new UUIDv7 as a uuid.UUID."""
    return uuid.UUID(bytes=uuid7_bytes(unix_ms))


def format_uuid(raw: bytes) -> str:
    """The canonical 8-4-4-4-12 text of 16 UUID bytes (cheaper than uuid.UUID)."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_unix_ms(value: uuid.UUID) -> int:
    """The creation time embedded in a UUIDv7, in Unix milliseconds."""
    return value.int >> 80
