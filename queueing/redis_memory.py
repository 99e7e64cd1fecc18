"""Redis memory: the eviction policy every process insists on, and the figures /metrics shows.

Redis holds the only copy of an admitted registration until the drain has
stored it, and of an audit entry until it is archived. A Redis that evicts
keys when full (any `maxmemory-policy` but `noeviction`) would drop them
without a word; with `noeviction` a full Redis refuses writes instead, and
the door answers 503. So the door and every worker refuse to start against
an evicting Redis (each master of a cluster), and the door exports
`used_memory` and `maxmemory` so an alert fires well before the limit.

The policy is read from `INFO memory` (`maxmemory_policy`), which managed
services allow where they disable `CONFIG`; `CONFIG GET` is the fallback
for a server whose INFO lacks the field.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import RedisCluster
from redis.exceptions import ResponseError

from queueing.redis_client import REDIS_UNAVAILABLE, RedisClient

log = logging.getLogger("gelombang.redis")

REQUIRED_POLICY: Final = "noeviction"
# Between tries of a check Redis did not answer (a worker waits for its Redis).
CHECK_RETRY_SECONDS: Final = 2.0


class EvictingRedis(Exception):
    """Redis would evict keys when full: queued registrations could vanish."""


@dataclass(frozen=True, slots=True)
class NodeMemory:
    """One Redis server's (or cluster master's) memory as INFO reports it."""

    node: str  # host:port
    used: int
    limit: int  # maxmemory; 0 = no limit (then only the machine's memory bounds it)
    policy: str


async def _info(redis: RedisClient) -> dict[str, dict[str, Any]]:
    """INFO memory of the server, or of each cluster master, by host:port."""
    if isinstance(redis, RedisCluster):
        nodes = redis.get_primaries()
        replies = await asyncio.gather(*(
            redis.execute_command("INFO", "memory", target_nodes=node) for node in nodes))
        return {node.name: dict(reply) for node, reply in zip(nodes, replies, strict=True)}
    kwargs = redis.connection_pool.connection_kwargs
    reply: Any = await redis.info("memory")
    return {f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}": dict(reply)}


async def _config_policy(redis: RedisClient) -> str:
    reply: Any = await redis.config_get("maxmemory-policy")
    if isinstance(redis, RedisCluster) and "maxmemory-policy" not in reply:
        reply = next(iter(reply.values()), {})  # several nodes answered: any will do here
    return str(reply.get("maxmemory-policy", "unknown"))


async def memory(redis: RedisClient) -> list[NodeMemory]:
    """Used memory, limit and eviction policy of each server (one, or each master)."""
    figures = []
    for node, info in sorted((await _info(redis)).items()):
        policy = info.get("maxmemory_policy")
        if policy is None:
            try:
                policy = await _config_policy(redis)
            except ResponseError:  # CONFIG disabled or renamed (managed Redis)
                policy = "unknown"
        figures.append(NodeMemory(node, int(info.get("used_memory", 0)),
                                  int(info.get("maxmemory", 0)), str(policy)))
    return figures


async def require_noeviction(redis: RedisClient) -> None:
    """Raise EvictingRedis unless every server's policy is `noeviction`."""
    for figures in await memory(redis):
        if figures.policy != REQUIRED_POLICY:
            raise EvictingRedis(
                f"Redis {figures.node} has maxmemory-policy {figures.policy!r}; Gelombang "
                f"needs {REQUIRED_POLICY!r} (an evicting Redis drops queued registrations"
                " when full): set `maxmemory-policy noeviction` in its configuration")


async def wait_until_checked(redis: RedisClient, what: str,
                             stopping: asyncio.Event | None = None) -> None:
    """Check the policy, waiting out a Redis that does not answer yet (EvictingRedis
    when it is not `noeviction`); returns early if `stopping` is set meanwhile."""
    while True:
        try:
            await require_noeviction(redis)
            return
        except REDIS_UNAVAILABLE as exc:
            log.warning("%s: Redis eviction policy not checked yet (%s); again in %.0f s",
                        what, type(exc).__name__, CHECK_RETRY_SECONDS)
        if stopping is None:
            await asyncio.sleep(CHECK_RETRY_SECONDS)
            continue
        try:
            await asyncio.wait_for(stopping.wait(), CHECK_RETRY_SECONDS)
            return
        except TimeoutError:
            pass
