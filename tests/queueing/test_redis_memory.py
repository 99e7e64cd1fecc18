"""Redis must never evict: every process refuses a Redis whose maxmemory-policy is not
noeviction, and the door exports Redis's used and maximum memory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from config.settings import Settings
from gelombang.processes import free_port
from gelombang.services import RedisServer
from intake.door import open_door
from queueing.redis_memory import EvictingRedis, memory, require_noeviction
from queueing.supervision import BackgroundTaskFailed
from tests.intake.door_helpers import DoorUnderTest
from tests.support import REPO_ROOT, write_config
from tests.workers.verification_helpers import eventually


async def set_policy(server: RedisServer, policy: str) -> None:
    client = Redis.from_url(server.url)
    try:
        await client.config_set("maxmemory-policy", policy)
    finally:
        await client.aclose()


def on(settings: Settings, server: RedisServer) -> Settings:
    redis = settings.redis.model_copy(update={"url": server.url})
    return settings.model_copy(update={"redis": redis})


async def test_the_redis_the_dev_stack_and_tests_start_never_evicts(
    redis_server: RedisServer, redis_client: Redis,
) -> None:
    command = redis_server.command()
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert await redis_client.config_get("maxmemory-policy") == {
        "maxmemory-policy": "noeviction"}
    await require_noeviction(redis_client)


ROLES = [["worker", "store"], ["worker", "email"], ["serve", "--processes", "1"]]


@pytest.mark.parametrize("command", ROLES, ids=["store", "email", "door"])
async def test_every_process_refuses_to_start_against_an_evicting_redis(
    own_redis: RedisServer, test_settings: Settings, tmp_path: Path, command: list[str],
) -> None:
    await set_policy(own_redis, "allkeys-lru")
    config = tmp_path / "config.toml"
    write_config(on(test_settings, own_redis), config, 0, 0)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gelombang", *command], cwd=REPO_ROOT,
        env={**os.environ, "GELOMBANG_CONFIG": str(config)}, capture_output=True, text=True,
        timeout=60, check=False)
    assert done.returncode == 3, done.stderr[-500:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"gelombang: refusing to start: Redis 127.0.0.1:{own_redis.port} has maxmemory-policy"
        " 'allkeys-lru'; Gelombang needs 'noeviction' (an evicting Redis drops queued"
        " registrations when full): set `maxmemory-policy noeviction` in its configuration")


async def test_the_policy_is_read_when_config_is_disabled(tmp_path: Path) -> None:
    # Managed services often rename CONFIG away; INFO memory still says the policy.
    port = free_port()
    command = [*RedisServer(tmp_path, port).command(), "--rename-command", "CONFIG", "",
               "--maxmemory-policy", "volatile-lru"]  # the last one given wins
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    client = Redis(port=port)
    try:
        await eventually(lambda: pinged(client), within=10, what="redis answering")
        with pytest.raises(ResponseError):
            await client.config_get("maxmemory-policy")
        with pytest.raises(EvictingRedis, match="'volatile-lru'"):
            await require_noeviction(client)
    finally:
        await client.aclose()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def pinged(client: Redis) -> bool:
    try:
        return bool(await client.ping())
    except OSError:
        return False


async def test_a_door_started_before_redis_stops_once_redis_turns_out_to_evict(
    own_redis: RedisServer, test_settings: Settings,
) -> None:
    own_redis.stop()
    # Evicting from its first answer: set after the start, the door's check
    # could come between the two and pass.
    own_redis.maxmemory_policy = "allkeys-lfu"
    stopping = asyncio.Event()
    with pytest.raises(BackgroundTaskFailed) as failure:
        async with open_door(on(test_settings, own_redis), on_fatal=stopping.set):
            # The door started without Redis (it answers 503 meanwhile).
            own_redis.start()
            await asyncio.wait_for(stopping.wait(), 15)
    assert isinstance(failure.value.__cause__, EvictingRedis)


async def test_the_door_exports_redis_memory(door_under_test: DoorUnderTest,
                                             redis_client: Redis) -> None:
    [node] = await memory(redis_client)
    async with door_under_test.admin.get("/metrics") as response:
        text = await response.text()
    used = [line for line in text.splitlines()
            if line.startswith(f'gelombang_redis_used_memory_bytes{{node="{node.node}"}}')]
    assert len(used) == 1 and float(used[0].split()[-1]) > 0
    assert f'gelombang_redis_maxmemory_bytes{{node="{node.node}"}} 0.0' in text
