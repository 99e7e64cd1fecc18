"""What every worker process connects to, and which of their errors mean "later"."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Final

import asyncpg

from config.settings import Settings
from queueing.redis_client import REDIS_UNAVAILABLE, RedisClient, connect

# Errors that say "try again later", not "this entry is bad".
TRANSIENT: Final = (
    *REDIS_UNAVAILABLE,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # a connection broken mid-operation
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, starting up
    asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)


def consumer_name() -> str:
    """Unique per process: a restarted worker never inherits a dead one's entries."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def connect_worker_redis(settings: Settings) -> RedisClient:
    """A client whose socket timeout outlasts a blocking read.

    On a cluster each partition's loop reads its own stream (one XREADGROUP
    per partition, never several streams in one call), so every read goes to
    the node that owns that partition.
    """
    timeout = settings.redis.timeout_seconds
    return connect(
        settings.redis,
        socket_timeout=settings.drain.block_ms / 1000 + timeout + 1.0,
        socket_connect_timeout=timeout,
    )


async def create_pool(settings: Settings, size: int, role: str = "worker") -> asyncpg.Pool:
    """The worker's PostgreSQL pool; connects lazily, so a down database is waited for.

    Its connections carry application_name `gelombang-<role>`, so operators
    (and the benchmarks) see in pg_stat_activity who holds how many.
    """
    pool = await asyncpg.create_pool(
        settings.postgres.dsn, min_size=0, max_size=size, timeout=5.0, command_timeout=60.0,
        server_settings={"application_name": f"gelombang-{role}"},
    )
    assert pool is not None
    return pool
