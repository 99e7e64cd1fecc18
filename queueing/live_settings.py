"""Admission settings that ops change live, shared by every door process.

Configuration gives the starting values; a change through the admin API or
CLI is stored in a Redis hash (only the fields that were set) and every door
process re-reads it periodically, so a change is in force everywhere within
`refresh_seconds` plus one round trip, without restarts. The hash persists
with Redis: a later restart keeps the values ops last set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Final

import orjson

from queueing.admission import AdmissionPolicy, PartitionShare
from queueing.audit import audit_fields, queue_audit
from queueing.keys import ADMISSION_SETTINGS
from queueing.redis_client import REDIS_UNAVAILABLE, RedisClient

log = logging.getLogger(__name__)

# The settings ops may change: the policy's fields (config/settings.py, AdmissionPolicy).
FIELDS: Final = frozenset(AdmissionPolicy.model_fields)


def _merge(configured: AdmissionPolicy, stored: Mapping[Any, Any]) -> AdmissionPolicy:
    changes: dict[str, Any] = {}
    for raw_name, raw_value in stored.items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        if name in FIELDS:
            changes[name] = orjson.loads(raw_value)
    # Not validated again: every value was checked before it was stored.
    return configured.model_copy(update=changes)


async def read_policy(redis: RedisClient, configured: AdmissionPolicy) -> AdmissionPolicy:
    """The policy in force for the deployment: config, then live changes."""
    return _merge(configured, await redis.hgetall(ADMISSION_SETTINGS))


async def update_policy(
    redis: RedisClient,
    configured: AdmissionPolicy,
    changes: Mapping[str, Any],
    *,
    actor: str,
    source: str,
) -> AdmissionPolicy:
    """Apply a validated partial update and audit it; returns the policy now in force."""
    encoded = {name: orjson.dumps(value) for name, value in changes.items()}
    async with redis.pipeline(transaction=True) as pipe:
        if encoded:
            _ = pipe.hset(ADMISSION_SETTINGS, mapping=encoded)  # type: ignore[arg-type]
        # Pipeline calls only queue commands; execute() sends them.
        queue_audit(pipe, audit_fields(actor=actor, source=source, action="admission.update",
                                       details=changes))
        _ = pipe.hgetall(ADMISSION_SETTINGS)
        results = await pipe.execute()
    return _merge(configured, results[-1])


class LiveAdmission:
    """The policy in force in this process, refreshed from Redis."""

    def __init__(
        self, redis: RedisClient, configured: AdmissionPolicy, partitions: int, idempotency_ttl: int
    ) -> None:
        self._redis = redis
        self._configured = configured
        self._partitions = partitions
        self._ttl = idempotency_ttl
        self.policy = configured
        self._share = PartitionShare.of(configured, partitions, idempotency_ttl)
        self._running = True

    @property
    def configured(self) -> AdmissionPolicy:
        """The policy as configuration gives it, before live changes."""
        return self._configured

    def share(self) -> PartitionShare:
        """One partition's share of the policy in force (cheap: precomputed)."""
        return self._share

    def apply(self, policy: AdmissionPolicy) -> None:
        """Put a policy in force in this process."""
        if policy != self.policy:
            log.info("admission settings now in force: %s", policy.model_dump())
            self.policy = policy
            self._share = PartitionShare.of(policy, self._partitions, self._ttl)

    def stop(self) -> None:
        """End `run` at its next turn."""
        self._running = False

    async def refresh(self) -> None:
        """Read the deployment's policy once."""
        self.apply(await read_policy(self._redis, self._configured))

    async def run(self, interval: float) -> None:
        """Refresh until stopped; a Redis outage keeps the last known policy."""
        # The flag as well as the task's cancellation: a door process was seen
        # refreshing on after its shutdown had cancelled this loop (the cancel
        # lost somewhere inside a Redis call), which left the process hanging.
        while self._running:
            with contextlib.suppress(*REDIS_UNAVAILABLE):
                async with asyncio.timeout(interval):
                    await self.refresh()
            await asyncio.sleep(interval)
