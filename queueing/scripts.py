"""Lua scripts run by EVALSHA, several calls per round trip."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import hiredis
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from queueing.redis_client import REDIS_UNAVAILABLE, RedisClient

ScriptCall = tuple[Sequence[str], Sequence[str | bytes | int]]


def script_source(name: str) -> str:
    """The text of `queueing/lua/<name>.lua`."""
    return resources.files("queueing.lua").joinpath(f"{name}.lua").read_text()


class PipelinedScript:
    """One Lua script bound to a client; calls travel together in one pipeline.

    The pipeline is not a transaction: each call is atomic on its own keys
    (one hash tag each). On a Redis Cluster the calls go out concurrently, one
    per slot, and fail one by one: a node that is down fails only the calls
    for its slots (see run_all).
    """

    def __init__(self, redis: RedisClient, source: str, *, direct: bool = False) -> None:
        self._redis = redis
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        # On one server: the calls packed and sent on a pooled connection here, past
        # redis-py's pipeline and its retries (see direct_round_trip).
        self._direct = direct and isinstance(redis, Redis)

    async def run_all(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """The replies of every call, in order, from one round trip.

        One server: any failure raises. A cluster: a call whose node failed
        has the exception (one of REDIS_UNAVAILABLE) as its reply; the
        caller decides per call.
        """
        if isinstance(self._redis, RedisCluster):
            return await self._run_on_cluster(self._redis, calls)
        try:
            return await self._evalsha_all(calls)
        except NoScriptError:
            # A restarted or flushed Redis lost its script cache: load it once
            # and retry, so a recovered Redis needs no process restart.
            await self._redis.script_load(self._source)
            return await self._evalsha_all(calls)

    async def run(self, keys: Sequence[str], args: Sequence[str | bytes | int]) -> Any:
        """One call's reply; a cluster node that is down raises, as one server does."""
        [reply] = await self.run_all([(keys, args)])
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def _evalsha_all(self, calls: Sequence[ScriptCall]) -> list[Any]:
        if self._direct:
            assert isinstance(self._redis, Redis)
            sha = self._sha
            return await direct_round_trip(self._redis, [
                # hiredis's stub types the tuple as one element long.
                hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args))  # type: ignore[arg-type]
                for keys, args in calls])
        # redis-py's Script objects ask SCRIPT EXISTS before every pipeline, an
        # extra round trip; plain EVALSHA with the retry above avoids it.
        if len(calls) == 1:
            # Under light load every round trip is one call: a pipeline object
            # per request would cost the door more CPU than the call itself.
            ((keys, args),) = calls
            return [await self._redis.evalsha(self._sha, len(keys), *keys, *args)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                # Pipeline calls only queue commands; execute() sends them.
                _ = pipe.evalsha(self._sha, len(keys), *keys, *args)
            return await pipe.execute()

    async def _run_on_cluster(self, cluster: RedisCluster,
                              calls: Sequence[ScriptCall]) -> list[Any]:
        # The cluster client's pipeline fails as a whole when one node cannot
        # be reached, and does not refresh its slot map on that path; single
        # calls do both right (the next call after a failover finds the new
        # master), and only the failed node's calls fail.
        replies = await asyncio.gather(*(self._call_on_cluster(cluster, keys, args)
                                         for keys, args in calls), return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException) and not isinstance(reply, REDIS_UNAVAILABLE):
                raise reply
        return replies

    async def _call_on_cluster(self, cluster: RedisCluster, keys: Sequence[str],
                               args: Sequence[str | bytes | int]) -> Any:
        try:
            return await cluster.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            # This node (new, restarted, or a promoted replica) lacks the
            # script: EVAL runs it and caches it there.
            return await cluster.eval(self._source, len(keys), *keys, *args)


async def direct_round_trip(redis: Redis, packed: list[bytes]) -> list[Any]:
    """The replies to commands packed in RESP, sent at once on one pooled connection.

    What redis-py's pipeline does for them, without its per-command bookkeeping
    (a command stack, response callbacks, retries, timing hooks): about a third
    of the door's Redis CPU per registration. Every reply is read before an error
    is raised, so the connection goes back to the pool in step; an exception or a
    cancellation in between drops the connection instead. The first error reply
    is raised (NoScriptError among them), as a pipeline raises it.
    """
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(packed)
        replies: list[Any] = []
        for _ in packed:
            try:
                replies.append(await connection.read_response())
            except ResponseError as error:
                replies.append(error)
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    finally:
        await pool.release(connection)
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies
