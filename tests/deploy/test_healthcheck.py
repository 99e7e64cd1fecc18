"""`gelombang healthcheck`: the role read from PID 1's command line, and each role's check."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from gelombang.healthcheck import Unhealthy, check, role_from_cmdline
from queueing.keys import HEARTBEATS, role_heartbeats
from tests.intake.door_helpers import DoorUnderTest


@pytest.mark.parametrize(("cmdline", "role"), [
    # How the kernel shows a console script started as the image's ENTRYPOINT.
    (["/usr/local/bin/python3.11", "/usr/local/bin/gelombang", "serve"], ("serve",)),
    (["/usr/local/bin/python3.11", "/usr/local/bin/gelombang", "serve", "--processes", "4"],
     ("serve",)),
    (["python", "/usr/local/bin/gelombang", "worker", "store", "--concurrency", "8"],
     ("worker", "store")),
    (["python", "-m", "gelombang", "worker", "nik"], ("worker", "nik")),
    # An init in front (compose `init: true`, tini).
    (["/sbin/docker-init", "--", "gelombang", "mail-sink", "--host", "0.0.0.0"], ("mail-sink",)),
    (["gelombang", "migrate"], ("migrate",)),
    # Only `worker` takes a second word; other positionals are arguments.
    (["gelombang", "blacklist", "import", "list.csv"], ("blacklist",)),
    (["redis-server", "*:6379"], ()),
    ([], ()),
])
def test_role_is_read_from_the_command_line(cmdline: list[str], role: tuple[str, ...]) -> None:
    assert role_from_cmdline(cmdline) == role


def _on_port(settings: Settings, port: int) -> Settings:
    return settings.model_copy(update={"public": settings.public.model_copy(update={"port": port})})


async def test_serve_is_healthy_while_the_door_answers_healthz(
        door_under_test: DoorUnderTest, test_settings: Settings) -> None:
    port = door_under_test.public.server.port
    assert port is not None
    # The check is synchronous (it runs as its own process); a thread keeps
    # this loop free to serve the request it makes.
    found = await asyncio.to_thread(check, ("serve",), _on_port(test_settings, port), 2.0)
    assert found.endswith("/healthz: 200")


async def test_serve_is_unhealthy_when_nothing_listens(
        door_under_test: DoorUnderTest, test_settings: Settings) -> None:
    port = door_under_test.public.server.port
    assert port is not None
    await door_under_test.public.close()
    with pytest.raises(Unhealthy, match="/healthz"):
        await asyncio.to_thread(check, ("serve",), _on_port(test_settings, port), 2.0)


@pytest.mark.both_redis
@pytest.mark.parametrize(("hostname", "age_intervals", "healthy"), [
    ("store-7f9c", 0.5, True),
    ("store-7f9c", 10.0, False),   # stuck, or cut off from Redis
    ("elsewhere", 0.5, False),     # another container's heartbeat is not this one's
])
async def test_store_worker_needs_its_own_fresh_heartbeat(
        redis_client: Redis, test_settings: Settings, monkeypatch: pytest.MonkeyPatch,
        hostname: str, age_intervals: float, healthy: bool) -> None:
    beat = time.time() - age_intervals * test_settings.drain.heartbeat_seconds
    await redis_client.zadd(HEARTBEATS, {"store-7f9c-42-a1b2c3": beat})
    monkeypatch.setattr("gelombang.healthcheck.socket.gethostname", lambda: hostname)
    if healthy:
        found = await asyncio.to_thread(check, ("worker", "store"), test_settings, 2.0)
        assert found.startswith("drain heartbeat")
    else:
        with pytest.raises(Unhealthy, match="heartbeat"):
            await asyncio.to_thread(check, ("worker", "store"), test_settings, 2.0)


@pytest.mark.both_redis
async def test_verification_workers_need_their_own_fresh_heartbeat(
        redis_client: Redis, test_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gelombang.healthcheck.socket.gethostname", lambda: "verify-1")
    with pytest.raises(Unhealthy, match="no email heartbeat"):
        await asyncio.to_thread(check, ("worker", "email"), test_settings, 2.0)
    await redis_client.zadd(role_heartbeats("email"), {"verify-1-42-a1b2c3": time.time()})
    found = await asyncio.to_thread(check, ("worker", "email"), test_settings, 2.0)
    assert found.startswith("email heartbeat")
    # The email worker's beat says nothing of the NIK worker's.
    with pytest.raises(Unhealthy, match="no nik heartbeat"):
        await asyncio.to_thread(check, ("worker", "nik"), test_settings, 2.0)
    gone = test_settings.model_copy(update={"redis": test_settings.redis.model_copy(
        update={"url": "redis://127.0.0.1:1/0", "cluster_seeds": []})})
    with pytest.raises(Unhealthy, match="Redis"):
        await asyncio.to_thread(check, ("worker", "nik"), gone, 2.0)


def test_a_container_that_is_not_gelombang_is_unhealthy(test_settings: Settings) -> None:
    with pytest.raises(Unhealthy, match="name the role"):
        check((), test_settings, 1.0)
    assert "one-shot" in check(("migrate",), test_settings, 1.0)
