"""Lua scripts run by EVALSHA, several calls per round trip."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

ScriptCall = tuple[Sequence[str], Sequence[str | bytes | int]]


def script_source(name: str) -> str:
    """The text of `queueing/lua/<name>.lua`."""
    return resources.files("queueing.lua").joinpath(f"{name}.lua").read_text()


class PipelinedScript:
    """One Lua script bound to a client; calls travel together in one pipeline.

    The pipeline is not a transaction: each call is atomic on its own keys
    (one hash tag each), and a cluster client can split the pipeline by node.
    """

    def __init__(self, redis: Redis, source: str) -> None:
        self._redis = redis
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()

    async def run_all(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """The replies of every call, in order, from one round trip."""
        try:
            return await self._evalsha_all(calls)
        except NoScriptError:
            # A restarted or flushed Redis lost its script cache: load it once
            # and retry, so a recovered Redis needs no process restart.
            await self._redis.script_load(self._source)
            return await self._evalsha_all(calls)

    async def _evalsha_all(self, calls: Sequence[ScriptCall]) -> list[Any]:
        # redis-py's Script objects ask SCRIPT EXISTS before every pipeline, an
        # extra round trip; plain EVALSHA with the retry above avoids it.
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                # Pipeline calls only queue commands; execute() sends them.
                _ = pipe.evalsha(self._sha, len(keys), *keys, *args)
            return await pipe.execute()
