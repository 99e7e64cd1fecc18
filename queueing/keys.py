"""Every Redis key and stream name of Gelombang, in one place.

Partition keys carry a hash tag (`{p3}`), so every key of one partition lives
in one Redis Cluster slot and the admission script, which touches the
partition's bucket, stream and idempotency records at once, runs unchanged on
a cluster. The live admission settings and the audit stream share the tag
`{admin}`, because a settings change and its audit entry commit in one
MULTI. Every other key is used alone.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from dataclasses import dataclass

PREFIX = "gelombang"

ADMIN_TAG = "{admin}"
# Live admission settings (JSON) written by the admin API, read by every door.
ADMISSION_SETTINGS = f"{PREFIX}:{ADMIN_TAG}:admission:settings"
# Append-only audit log of admin actions.
AUDIT_STREAM = f"{PREFIX}:{ADMIN_TAG}:audit"
# The consumer group of the drain workers on every intake stream.
STORE_GROUP = "store"
# Drain worker heartbeats: a sorted set of consumer names scored by the Unix
# time of their last beat, and one hash of details per consumer.
HEARTBEATS = f"{PREFIX}:workers:heartbeats"
# Each NIK worker's circuit breaker state (queueing/breaker_reports.py).
BREAKER_REPORTS = f"{PREFIX}:workers:breakers"


def outbound_bucket(service: str) -> str:
    """The rate bucket of calls to one outside service ("smtp", "nik"), shared by all workers."""
    return f"{PREFIX}:outbound:{service}:bucket"


def heartbeat_details(consumer: str) -> str:
    """The hash describing one live drain consumer."""
    return f"{PREFIX}:workers:consumer:{consumer}"


@dataclass(frozen=True, slots=True)
class Partition:
    """The Redis keys of one intake partition."""

    index: int

    @property
    def tag(self) -> str:
        """The hash tag shared by every key of this partition."""
        return f"{{p{self.index}}}"

    @property
    def stream(self) -> str:
        """The stream of admitted registrations."""
        return f"{PREFIX}:{self.tag}:intake"

    @property
    def bucket(self) -> str:
        """This partition's share of the admission token bucket (a hash)."""
        return f"{PREFIX}:{self.tag}:bucket"

    def idempotency(self, key: str) -> str:
        """The record of one Idempotency-Key, named by a short digest of it.

        A day's keyed registrations each hold a record for 24 h: a 16-character
        name instead of the client's up to 64 keeps each record a size class
        smaller in Redis. 96 bits make a collision between two live keys
        (millions, not billions) vanishingly unlikely; the key is not secret,
        so an unkeyed hash serves.
        """
        digest = hashlib.blake2b(key.encode(), digest_size=12).digest()
        return f"{PREFIX}:{self.tag}:idem:{base64.urlsafe_b64encode(digest).decode()}"

    @property
    def dead_letters(self) -> str:
        """Entries of the intake stream that could not be stored, with the reason."""
        return f"{PREFIX}:{self.tag}:dead"

    def verification(self, kind: str) -> str:
        """The stream of verification jobs of one kind (`email`, `nik`)."""
        return f"{PREFIX}:{self.tag}:verify:{kind}"

    def handoff(self, handoff_id: int) -> str:
        """The marker that an outbox row's jobs were handed off (makes a repeat a no-op)."""
        return f"{PREFIX}:{self.tag}:handoff:{handoff_id}"


def partitions(count: int) -> tuple[Partition, ...]:
    """Every partition of a deployment with `count` partitions."""
    return tuple(Partition(i) for i in range(count))


def partition_for_idempotency_key(key: str, count: int) -> int:
    """The partition owning an Idempotency-Key: the same for every door process."""
    # crc32 rather than hash(): Python's str hash is randomised per process.
    return zlib.crc32(key.encode()) % count


def partition_for_digest(digest: bytes, count: int) -> int:
    """The partition for a keyed hash (uniform, since HMAC output is)."""
    return int.from_bytes(digest[:4], "big") % count
