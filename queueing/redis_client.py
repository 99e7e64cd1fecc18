"""Connecting to Redis: one server or a Redis Cluster, as `redis.cluster` says.

Every process (door, workers, admin commands) connects here, so the choice
is made in one place. The code above works on either client: every script
and transaction touches keys of one hash tag (queueing/keys.py), and the
calls that span partitions are plain pipelines or one call per partition.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.settings import RedisSettings

RedisClient: TypeAlias = Redis | RedisCluster

# What a Redis call raises when the server (or a cluster node, or the client's
# view of the cluster) is not there: the door answers 503, a worker retries.
# RedisClusterException is not a RedisError (e.g. SlotNotCoveredError).
REDIS_UNAVAILABLE: Final = (RedisError, RedisClusterException, OSError, TimeoutError)


def never_ran(error: BaseException) -> bool:
    """Whether a call that failed with `error` certainly did not run in Redis.

    True when Redis answered with an error (a Gelombang script errs, if at
    all, before its first write: out of memory, busy, no script, a cluster
    redirect, a fenced call), when the client found no node for the slot, or
    when the connection could not be opened: redis-py opens it before writing
    a byte of the call, and says "connecting to" in that error only. False
    for a timeout or a connection lost once the call may have been sent:
    Redis may have run it.
    """
    if isinstance(error, ResponseError | RedisClusterException):
        return True
    return (isinstance(error, RedisConnectionError | RedisTimeoutError)
            and "connecting to" in str(error))


def _seed(address: str) -> ClusterNode:
    host, _, port = address.strip().rpartition(":")
    return ClusterNode(host, int(port))


def connect(settings: RedisSettings, **options: Any) -> RedisClient:
    """A client of the configured Redis; options go to the client (timeouts, retry, pool).

    On a cluster, `max_connections` bounds each node's pool, and the client
    starts from `url`'s node plus `cluster_seeds`, so it can start while one
    of them is down.
    """
    if not settings.cluster:
        return Redis.from_url(settings.url, **options)
    return RedisCluster.from_url(
        settings.url,
        startup_nodes=[_seed(address) for address in settings.cluster_seeds],
        # A master that is down takes only its slots down (the door answers 503
        # for its partitions); the client must not refuse the whole cluster.
        require_full_coverage=False,
        **options,
    )


def is_cluster(client: RedisClient) -> bool:
    """Whether the client speaks to a Redis Cluster."""
    return isinstance(client, RedisCluster)
