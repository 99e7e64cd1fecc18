"""Every Redis key and stream name of Gelombang, in one place.

Partition keys carry a hash tag (`{p3}`), so every key of one partition lives
in one Redis Cluster slot and the admission script, which touches the
partition's bucket, stream and idempotency records at once, runs unchanged on
a cluster. The live admission settings and the audit stream share the tag
`{admin}`, because a settings change and its audit entry commit in one
MULTI. Every other key is used alone.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

PREFIX = "gelombang"

ADMIN_TAG = "{admin}"
# Live admission settings (JSON) written by the admin API, read by every door.
ADMISSION_SETTINGS = f"{PREFIX}:{ADMIN_TAG}:admission:settings"
# Append-only audit log of admin actions.
AUDIT_STREAM = f"{PREFIX}:{ADMIN_TAG}:audit"


def audit_read_mark(digest: str) -> str:
    """Set (with a TTL) when a read was audited: the same read is not audited again
    until it expires. `digest` names the read (route, query, address)."""
    return f"{PREFIX}:{ADMIN_TAG}:audit:read:{digest}"
# The consumer group of the drain workers on every intake stream.
STORE_GROUP = "store"
# Drain worker heartbeats: a sorted set of consumer names scored by the Unix
# time of their last beat, and one hash of details per consumer.
HEARTBEATS = f"{PREFIX}:workers:heartbeats"
# Each NIK worker's circuit breaker state (queueing/breaker_reports.py).
BREAKER_REPORTS = f"{PREFIX}:workers:breakers"
# The one field of a verification job, on the backlog and the priority lanes:
# the registration's id (16 bytes).
JOB_FIELD = b"r"


def outbound_bucket(service: str) -> str:
    """The rate bucket of calls to one outside service ("smtp", "nik"), shared by all workers."""
    return f"{PREFIX}:outbound:{service}:bucket"


def heartbeat_details(consumer: str) -> str:
    """The hash describing one live worker process (any role)."""
    return f"{PREFIX}:workers:consumer:{consumer}"


# Door processes' counter reports (queueing/process_reports.py): a sorted set of
# report names scored by the Unix time of their last report, and one hash of
# counters per door process that expires a few periods after its last report.
# The workers' counters live beside their heartbeats (heartbeat_details).
DOOR_REPORTS = f"{PREFIX}:doors:reports"


def door_report(name: str) -> str:
    """The hash of one door process's counters."""
    return f"{PREFIX}:doors:report:{name}"


def role_heartbeats(role: str) -> str:
    """The heartbeat sorted set of one worker role ("drain", "email", "nik").

    The drain keeps the name it always had (HEARTBEATS), which the health
    check and `worker status` read.
    """
    return HEARTBEATS if role == "drain" else f"{PREFIX}:workers:{role}:heartbeats"


# Hashes of idempotency records per partition and period: at the 2020 opening
# day's 1.43 million keyed registrations, ~700 records each (a hash table, ~70
# bytes a record); under ~260,000 a period, listpacks of at most 128 fields.
# Changing it moves every live record to another hash: only with intake closed
# for a period.
IDEMPOTENCY_BUCKETS = 256


def idempotency_digest(key: str) -> bytes:
    """A short name for an Idempotency-Key (up to 64 characters).

    96 bits make a collision between two live keys (millions, not billions)
    vanishingly unlikely; the key is not secret, so an unkeyed hash serves.
    """
    return hashlib.blake2b(key.encode(), digest_size=12).digest()


def idempotency_expiry(ttl: int, now: float) -> int:
    """When the hashes written at `now` expire: the end of the next period.

    The admission script computes this itself from the Redis server's clock
    (queueing/lua/admit.lua); this is its mirror, for readers and tests.
    """
    return (int(now // ttl) + 2) * ttl


def idempotency_bucket(digest: bytes) -> int:
    """Which of the IDEMPOTENCY_BUCKETS hashes of a period holds a key's record."""
    return int.from_bytes(digest[:4], "big") % IDEMPOTENCY_BUCKETS


# The record of what one admission call decided, kept so that a door that
# lost the reply (a timeout, a broken connection) can read it: the door asks
# within redis.timeout_seconds + redis.outcome_check_seconds of sending (at
# most 10.8 s at the defaults' timeout and the settings' largest check). One
# key per call (per partition's group): about 180 bytes by used_memory on Redis
# 7.0 (a call of four), so at 1,500 calls a second 45,000 keys, 8 MB.
ADMISSION_OUTCOME_SECONDS = 30
# The fence a door sets when it found a call had not run: the call must not
# run later, should its bytes still arrive (a slow network, a paused Redis).
# Rare (only calls whose reply was lost), so kept long.
ADMISSION_FENCE_SECONDS = 600


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The hash fields that hold, or will hold, one Idempotency-Key's record."""

    current: str  # the hash of this period: written, and read
    previous: str  # the previous period's: read only
    field: bytes  # the key's digest


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

    @property
    def idempotency_stem(self) -> str:
        """The start of this partition's idempotency hashes' names: `<stem><period>:<bucket>`."""
        return f"{PREFIX}:{self.tag}:idem:"

    def idempotency(self, key: str, ttl: int, now: float) -> IdempotencyRecord:
        """Where the record of one Idempotency-Key is written and looked up at `now`.

        Records are fields of hashes, not keys of their own: a key of its own
        cost 168 bytes (name, keyspace and expiry entries), a field of a
        small hash (a listpack) about 30. A hash holds the keys of one of
        IDEMPOTENCY_BUCKETS buckets written during one period of `ttl`
        seconds and expires at the end of the next period, so a record is
        kept between `ttl` and twice that; a lookup reads the current and the
        previous period's hash.

        The admission script names these hashes itself, from the Redis
        server's clock, never a door's (doors' clocks differ: one a second
        ahead would write a key into the next period while another a second
        behind still looked in the two before it). This is its mirror, for
        readers (the wave benchmark) and tests.
        """
        digest = idempotency_digest(key)
        bucket = idempotency_bucket(digest)
        period = int(now // ttl)
        stem = self.idempotency_stem
        return IdempotencyRecord(f"{stem}{period}:{bucket}", f"{stem}{period - 1}:{bucket}",
                                 digest)

    def admission_outcome(self, call_id: str) -> str:
        """What one admission call decided (its replies), or the fence saying it never ran."""
        return f"{PREFIX}:{self.tag}:admitted:{call_id}"

    @property
    def drain_lease(self) -> str:
        """The name of the drain worker that alone stores this partition's entries now."""
        return self.lease("drain")

    def lease(self, role: str) -> str:
        """The name of the worker process of `role` that alone reads this partition now."""
        return f"{PREFIX}:{self.tag}:{role}:lease"

    def lease_epoch(self, role: str) -> str:
        """The fencing epoch of the partition's `role` lease: raised each time a worker
        takes the lease, never when it renews it (workers/runtime/leases.py). Kept
        without expiry: a few bytes per partition and role."""
        return f"{PREFIX}:{self.tag}:{role}:epoch"

    @property
    def drain_refusals(self) -> str:
        """How often PostgreSQL refused each of this partition's intake entries (a hash,
        entry id -> count), so a count survives worker restarts (workers/drain/refusals.py)."""
        return f"{PREFIX}:{self.tag}:drain:refusals"

    @property
    def dead_letters(self) -> str:
        """Entries of the intake stream that could not be stored, with the reason."""
        return f"{PREFIX}:{self.tag}:dead"

    def verification(self, kind: str) -> str:
        """The stream of verification jobs of one kind (`email`, `nik`)."""
        return f"{PREFIX}:{self.tag}:verify:{kind}"

    def verification_priority(self, kind: str) -> str:
        """The priority lane of one kind: jobs of registrants who are waiting (a resend,
        a status page polled), served before the backlog."""
        return f"{PREFIX}:{self.tag}:verify:{kind}:priority"

    def priority_hold(self, kind: str, registration_id: bytes) -> str:
        """Set while a registration's job is in the priority lane (or was resent lately):
        one priority job per registration and kind at a time."""
        return f"{PREFIX}:{self.tag}:verify:{kind}:hold:{registration_id.hex()}"

    def verification_outcomes(self, kind: str) -> str:
        """Outcomes an outside service gave that PostgreSQL has not recorded yet (a hash).

        A worker stopping while PostgreSQL is down leaves them here, so its
        successor records them instead of sending the mail or asking the
        ministry a second time.
        """
        return f"{PREFIX}:{self.tag}:verify:{kind}:outcomes"

    def handoff(self, handoff_id: int, kind: str) -> str:
        """The marker that an outbox row's jobs of one kind were handed off (makes a
        repeat a no-op)."""
        return f"{PREFIX}:{self.tag}:handoff:{handoff_id}:{kind}"


def partitions(count: int) -> tuple[Partition, ...]:
    """Every partition of a deployment with `count` partitions."""
    return tuple(Partition(i) for i in range(count))


def partition_for_idempotency_key(key: str, count: int) -> int:
    """The partition owning an Idempotency-Key: the same for every door process."""
    # crc32 rather than hash(): Python's str hash is randomised per process.
    return zlib.crc32(key.encode()) % count


def partition_for_registration(registration_id: bytes, count: int) -> int:
    """The partition whose priority lanes take a registration's jobs.

    Any partition would do (a job names its registration, whose row is read
    from PostgreSQL); the id's random tail spreads them. A UUIDv7's first
    bytes are its time, so they would not.
    """
    return int.from_bytes(registration_id[-4:], "big") % count


def partition_for_digest(digest: bytes, count: int) -> int:
    """The partition for a keyed hash (uniform, since HMAC output is)."""
    return int.from_bytes(digest[:4], "big") % count


# The waiting room (docs/waiting-room.md). The scheduled waves, beside the live
# admission settings (changed and audited the same way): wave -> JSON schedule.
WAVES = f"{PREFIX}:{ADMIN_TAG}:waves"
# The line in force when no wave is: always open, no pre-queue.
STANDING_WAVE = "standing"


@dataclass(frozen=True, slots=True)
class WaveKeys:
    """The Redis keys of one wave's line, all under one hash tag (one cluster slot),
    so the line's script touches them together.

    Sizes at the issue's opening (300,000 people): the draw ~32 MB worst case is
    avoided by scores of 0 and 32-byte members (~60 bytes an entry in a skiplist,
    18 MB); the ticket hash ~4 fields a person (~70 bytes each, 84 MB); the seen set
    ~60 bytes a live ticket.
    """

    wave: str

    @property
    def tag(self) -> str:
        """The hash tag of every key of this wave."""
        return f"{{wq:{self.wave}}}"

    @property
    def state(self) -> str:
        """The schedule, the seed and the counters (hash)."""
        return f"{PREFIX}:{self.tag}:wave"

    @property
    def draw(self) -> str:
        """The pre-queue (zset of lottery key || ticket id, score 0)."""
        return f"{PREFIX}:{self.tag}:draw"

    @property
    def tickets(self) -> str:
        """Each ticket's position, join time, registration and gone mark (hash)."""
        return f"{PREFIX}:{self.tag}:tickets"

    @property
    def seen(self) -> str:
        """Ticket ids by the Unix time they were last seen (zset)."""
        return f"{PREFIX}:{self.tag}:seen"

    @property
    def gone(self) -> str:
        """Positions whose holders left or went idle (zset, score = position)."""
        return f"{PREFIX}:{self.tag}:gone"

    @property
    def gone_log(self) -> str:
        """The same positions in the order they went (list; doors follow it by index)."""
        return f"{PREFIX}:{self.tag}:gone_log"

    @property
    def turns(self) -> str:
        """The served counter's history: served value (member) by time in ms (score)."""
        return f"{PREFIX}:{self.tag}:turns"

    def all(self) -> tuple[str, ...]:
        """Every key, in the order the line's script takes them."""
        return (self.state, self.draw, self.tickets, self.seen, self.gone, self.gone_log,
                self.turns)
