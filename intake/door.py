"""The runtime of one door process: Redis client, admission, keys, clock, status reads."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from config.settings import Settings
from intake import metrics, queue_metrics
from intake.client_limit import ClientLimiter
from intake.storage import StatusStore
from queueing.admission import AdmissionPolicy, AdmissionScript
from queueing.grouping import GroupAdmitter
from queueing.ids import RegistrationIds
from queueing.intake_admission import IntakeAdmission, Sealing
from queueing.keys import Partition, partitions
from queueing.line import Line
from queueing.line_view import OrderWatch
from queueing.live_settings import LiveAdmission
from queueing.priority import PriorityLane
from queueing.process_reports import DoorReporter
from queueing.queue_tickets import TicketSigner
from queueing.redis_client import REDIS_UNAVAILABLE, RedisClient, connect
from queueing.redis_memory import EvictingRedis, require_noeviction, wait_until_checked
from queueing.sealing import Sealer
from queueing.supervision import Supervisor
from queueing.tokens import TokenSigner
from queueing.waves import schedule_configured

log = logging.getLogger("gelombang.door")

JAKARTA = ZoneInfo("Asia/Jakarta")
LANE_WARNING_SECONDS = 10.0


class JakartaCalendar:
    """Today's date in Asia/Jakarta, recomputed at most once a second."""

    __slots__ = ("_date", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._date = datetime.date.min

    def today(self) -> datetime.date:
        """The submission date the age rule uses."""
        second = int(time.time())
        if second != self._second:
            self._date = datetime.datetime.fromtimestamp(second, JAKARTA).date()
            self._second = second
        return self._date


@dataclass(eq=False)
class Door:
    """Everything a door process's handlers need, created once per process."""

    settings: Settings
    redis: RedisClient
    partitions: tuple[Partition, ...]
    live: LiveAdmission
    # Seals, names and admits registrations (POST /v1/registrations).
    admission: IntakeAdmission
    storage: StatusStore
    priority: PriorityLane
    # Issues registration ids and tells them from ids never issued, without a lookup.
    ids: RegistrationIds
    # Checks the emailed links; None when keys.token_keys is not configured (503).
    # On the door, not the app, so a SIGHUP can swap it (intake/key_reload.py).
    token_signer: TokenSigner | None = None
    calendar: JakartaCalendar = field(default_factory=JakartaCalendar)
    # None when the per-client-IP limit is off: the hot path then checks nothing more.
    client_limiter: ClientLimiter | None = None
    # The same limit's own buckets for the reads that may reach PostgreSQL.
    read_limiter: ClientLimiter | None = None
    draining: bool = False
    # Admissions on turns out of the line's order, for gelombang_queue_late_admissions_total.
    order_watch: OrderWatch = field(default_factory=OrderWatch)
    # When a status poll last logged that it could not reach the priority lane
    # (monotonic seconds): one line per LANE_WARNING_SECONDS, not one per poll.
    lane_warned_at: float = float("-inf")

    @property
    def sealer(self) -> Sealer:
        """The sealer registrations are sealed with now (swapped by a key reload)."""
        return self.admission.sealing.sealer

    async def prioritise(self, registration_id: bytes, kinds: Sequence[str]) -> None:
        """Put a polled registration's pending checks in the priority lane (once per hold).

        Never fails the poll: Redis away costs the lane, not the answer, and is
        logged by its type only, at most once per LANE_WARNING_SECONDS.
        """
        try:
            async with asyncio.timeout(self.settings.redis.timeout_seconds):
                await self.priority.push(registration_id, kinds)
        except REDIS_UNAVAILABLE as exc:
            now = time.monotonic()
            if now - self.lane_warned_at >= LANE_WARNING_SECONDS:
                self.lane_warned_at = now
                log.warning("status poll: priority lane not reached (%s)", type(exc).__name__)

    async def backlog(self) -> dict[int, int]:
        """Entries waiting in each partition's stream."""
        return await self._lengths(lambda partition: partition.stream)

    async def dead_letters(self) -> dict[int, int]:
        """Entries in each partition's dead-letter stream (the drain's and the jobs')."""
        return await self._lengths(lambda partition: partition.dead_letters)

    async def _lengths(self, stream_of: Callable[[Partition], str]) -> dict[int, int]:
        """XLEN of one stream per partition, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition in self.partitions:
                _ = pipe.xlen(stream_of(partition))
            lengths = await pipe.execute()
        return {p.index: int(n) for p, n in zip(self.partitions, lengths, strict=True)}


def connect_redis(settings: Settings, max_connections: int) -> RedisClient:
    """A Redis client that fails fast: the door answers 503, it never waits.

    On a cluster, a failed call also makes the client re-read the slot map
    before its next call, so the door follows a failover by itself.
    """
    timeout = settings.redis.timeout_seconds
    return connect(
        settings.redis,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # Retrying inside the client would stretch an outage past the door's
        # deadline; the client retries instead, after Retry-After.
        retry=Retry(NoBackoff(), 0),
        max_connections=max_connections,
    )


def configured_policy(settings: Settings) -> AdmissionPolicy:
    """The admission policy as configuration gives it."""
    return settings.admission.policy()


def token_signer(settings: Settings) -> TokenSigner | None:
    """The signer of the configured token keys, or None when there are none."""
    keys = settings.keys
    if not keys.token_keys:
        return None
    return TokenSigner(keys.token_key_bytes(), keys.active_token_key_id)


def waiting_room_line(settings: Settings, redis: RedisClient,
                      live: LiveAdmission) -> Line | None:
    """The waiting room's line, or None when `waiting_room.enabled` is false."""
    if not settings.waiting_room.enabled:
        return None
    active, keys = settings.keys.queue_key_bytes()
    return Line(redis, settings.waiting_room, TicketSigner(keys, active),
                lambda: live.policy.rate_per_second, settings.redis.timeout_seconds,
                on_call=queue_metrics.count_queue_calls)


def address_sealer(settings: Settings) -> Sealer:
    """The sealer of the configured address keys (`keys.require_address()` checked first)."""
    return Sealer(settings.keys.address_key_bytes(), settings.keys.active_address_key_id)


@contextlib.asynccontextmanager
async def open_door(settings: Settings,
                    on_fatal: Callable[[], None] | None = None) -> AsyncIterator[Door]:
    """Create a door's runtime; on exit flush admission and close Redis.

    Raises EvictingRedis when Redis would evict keys; when Redis is not there
    yet, the check runs once it answers, and a failure then calls `on_fatal`
    (stop the process) and is raised (BackgroundTaskFailed) on exit.
    """
    settings.keys.require_door()
    queue = settings.queue
    parts = partitions(queue.partitions)
    # One connection per partition lane in flight, plus refresh and admin calls.
    redis = connect_redis(settings, max_connections=queue.partitions + 16)
    checked = False
    try:
        async with asyncio.timeout(settings.redis.timeout_seconds):
            await require_noeviction(redis)
        checked = True
    except REDIS_UNAVAILABLE:
        pass  # the door starts without Redis (answering 503); checked once it answers
    except EvictingRedis:
        await redis.aclose()
        raise
    await schedule_configured(redis, settings.waiting_room.waves, settings.redis.timeout_seconds)
    live = LiveAdmission(redis, configured_policy(settings), queue.partitions,
                         queue.idempotency_ttl_seconds)
    ids = RegistrationIds(settings.keys.hash_key_bytes(),
                          settings.registration_ids.legacy_window_ms())
    admitter = GroupAdmitter(
        AdmissionScript(redis),
        parts,
        live.share,
        group_max=queue.group_max,
        pending_max=queue.pending_max,
        timeout=settings.redis.timeout_seconds,
        check_seconds=settings.redis.outcome_check_seconds,
        observe=metrics.observe_group,
    )
    line = waiting_room_line(settings, redis, live)
    door = Door(
        settings=settings,
        redis=redis,
        partitions=parts,
        live=live,
        admission=IntakeAdmission(Sealing.of(settings.keys, ids), live, admitter,
                                  queue.partitions, line),
        storage=StatusStore(settings),
        priority=PriorityLane(redis, settings),
        token_signer=token_signer(settings),
        ids=ids,
        client_limiter=(
            ClientLimiter(settings.client_limit) if settings.client_limit.enabled else None
        ),
        read_limiter=(
            ClientLimiter(settings.client_limit, reads=True)
            if settings.client_limit.enabled else None
        ),
    )
    with contextlib.suppress(Exception):
        # Start with the live policy when Redis is there; the refresher keeps
        # trying when it is not.
        async with asyncio.timeout(settings.redis.timeout_seconds):
            await live.refresh()
    # Restarted if it fails: meanwhile the door keeps the last policy it read.
    helpers = Supervisor(on_stop=on_fatal)
    helpers.start("admission refresher",
                  lambda: live.run(settings.admission.refresh_seconds), "restart")
    # The hot path counts in plain integers; this adds them to prometheus-client,
    # for a sibling door process's scrape (intake/metrics.py), and once at the end.
    helpers.start("metrics flush", metrics.flush_every, "restart")
    # The deployment's views sum every process's report (status, the ops page).
    reporter = DoorReporter(redis, metrics.door_counters,
                            redis_seconds=settings.redis.timeout_seconds)
    helpers.start("counter reports", reporter.run, "restart")
    if line is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(settings.redis.timeout_seconds):
                await line.tick()
        # Restarted if it fails; polls are answered from the last state read.
        helpers.start("waiting room line",
                      lambda: line.run(door.admission.backlog_was_full), "restart")
    if not checked:
        # Fatal: a door must not admit into a Redis that evicts.
        helpers.start("redis eviction check", lambda: wait_until_checked(redis, "door"), "stop")
    try:
        yield door
    finally:
        await door.admission.close()
        live.stop()
        reporter.stop()
        if line is not None:
            line.stop()
        # Bounded: should the cancel be lost, the loop still ends within one
        # more turn, and shutdown never waits longer than that.
        turn = settings.admission.refresh_seconds + settings.redis.timeout_seconds + 1.0
        if not await helpers.close(wait=turn):
            log.warning("the admission refresher, the reports or the metrics flush did not"
                        " stop; leaving them")
        await redis.aclose()
        await door.storage.close()
        helpers.check()
