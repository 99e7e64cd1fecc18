"""Slow and abusive clients against a real door process: it keeps answering, memory bounded.

Each test holds the door busy with one kind of abuse and meanwhile sends a valid
registration, which must get its 202. Limits are the door's configured ones
(public.idle_timeout_seconds, body_timeout_seconds, max_header_bytes, max_connections),
set small here so each abuse hits them within the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import aiohttp
import orjson
import pytest

from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from tests.support import DoorProcesses, door_processes

pytestmark = pytest.mark.slow

IDLE_TIMEOUT: Final = 1.0
BODY_TIMEOUT: Final = 1.0
# Below aiohttp's own 8190, so the tests see the configured limit at work.
HEADER_BYTES: Final = 2048
# How long a client waits for the door to act on a limit it enforces; far above the limits.
PATIENCE: Final = 15.0
# The figure; fewer where `ulimit -n` (this process's and the door's) is lower.
IDLE_CONNECTIONS_WANTED: Final = 10_000


def with_public(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={"public": settings.public.model_copy(update=changes)})


@contextlib.contextmanager
def one_door(settings: Settings, folder: Path) -> Iterator[DoorProcesses]:
    with door_processes(settings, folder, processes=1) as doors:
        yield doors


def door_pid(doors: DoorProcesses) -> int:
    """The pid of the (single) door process under the `gelombang serve` supervisor."""
    supervisor = doors.process.pid
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    assert len(children) == 1
    return int(children[0])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def register(url: str, factory: RegistrantFactory) -> int:
    """One valid registration on a fresh connection: the status it got."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PATIENCE)) as session:
        async with session.post(url + "/v1/registrations",
                                data=orjson.dumps(factory.make().body()),
                                headers={"Content-Type": "application/json"}) as response:
            await response.read()
            return response.status


@contextlib.asynccontextmanager
async def raw_connection(url: str) -> AsyncIterator[tuple[asyncio.StreamReader,
                                                          asyncio.StreamWriter]]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def closed_by_door(reader: asyncio.StreamReader) -> bytes:
    """Everything the door sends until it closes the connection (fails if it never does)."""
    try:
        return await asyncio.wait_for(reader.read(), PATIENCE)
    except ConnectionResetError:
        return b""


@pytest.fixture(scope="module")
def strict_door(
    test_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DoorProcesses]:
    """A door process with short idle and body timeouts."""
    settings = with_public(test_settings, idle_timeout_seconds=IDLE_TIMEOUT,
                           body_timeout_seconds=BODY_TIMEOUT, max_header_bytes=HEADER_BYTES)
    with one_door(settings, tmp_path_factory.mktemp("strict")) as doors:
        yield doors


HEAD: Final = (b"POST /v1/registrations HTTP/1.1\r\nHost: door\r\n"
               b"Content-Type: application/json\r\n")


async def test_slowloris_headers_are_cut_off_and_others_are_served(
    strict_door: DoorProcesses, redis_client: object
) -> None:
    async with raw_connection(strict_door.url) as (reader, writer):
        writer.write(HEAD)

        async def dribble() -> None:
            # One header byte at a time, for far longer than the idle timeout.
            for _ in range(int(PATIENCE / 0.1)):
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.1)

        dribbler = asyncio.create_task(dribble())
        try:
            assert await register(strict_door.url, RegistrantFactory()) == 202
            # The door closed the connection without an answer: nothing it can answer.
            assert await closed_by_door(reader) == b""
        finally:
            dribbler.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await dribbler
        assert not dribbler.done() or dribbler.cancelled() or dribbler.exception() is not None


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    strict_door: DoorProcesses,
) -> None:
    async with raw_connection(strict_door.url) as (reader, _):
        assert await closed_by_door(reader) == b""


async def test_a_slow_body_gets_408_and_others_are_served(
    strict_door: DoorProcesses, redis_client: object
) -> None:
    async with raw_connection(strict_door.url) as (reader, writer):
        writer.write(HEAD + b"Content-Length: 300\r\n\r\n" + b'{"nik": ')
        await writer.drain()
        assert await register(strict_door.url, RegistrantFactory()) == 202
        answer = await closed_by_door(reader)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert orjson.loads(body)["error"]["code"] == "request_timeout"


async def test_huge_headers_are_refused_and_others_are_served(
    strict_door: DoorProcesses, redis_client: object
) -> None:
    async with raw_connection(strict_door.url) as (reader, writer):
        writer.write(HEAD + b"X-Padding: " + b"a" * (HEADER_BYTES * 2) + b"\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            await writer.drain()
        answer = await closed_by_door(reader)
    assert refused_by_http_layer(answer), answer[:40]
    async with raw_connection(strict_door.url) as (reader, writer):
        fields = b"".join(b"X-Field-%d: v\r\n" % n for n in range(1000))
        writer.write(HEAD + fields + b"\r\n")
        with contextlib.suppress(ConnectionResetError):
            await writer.drain()
        answer = await closed_by_door(reader)
    assert refused_by_http_layer(answer), answer[:40]
    assert await register(strict_door.url, RegistrantFactory()) == 202


async def test_a_malformed_header_is_refused_without_its_bytes_in_the_log(
    strict_door: DoorProcesses, redis_client: object
) -> None:
    # A NIK in a header with a control character: aiohttp's parser quotes
    # the bad bytes in its exception, which must not reach the door's log.
    nik = RegistrantFactory().make().nik.encode()
    async with raw_connection(strict_door.url) as (reader, writer):
        writer.write(HEAD + b"X-Applicant: " + nik + b"\x01\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            await writer.drain()
        answer = await closed_by_door(reader)
    assert refused_by_http_layer(answer), answer[:40]
    for _ in range(100):
        if "(BadHttpMessage)" in strict_door.log_text():
            break
        await asyncio.sleep(0.05)
    log_text = strict_door.log_text()
    assert "(BadHttpMessage)" in log_text  # the refusal is logged...
    assert nik.decode() not in log_text  # ...without what the client sent


async def test_a_flood_of_invalid_json_is_answered_400_and_memory_stays_bounded(
    strict_door: DoorProcesses, redis_client: object
) -> None:
    pid = door_pid(strict_door)
    before = rss_bytes(pid)
    statuses: dict[int, int] = {}
    garbage = [b"{", b"\xff\xfe", b'{"nik": "' + b"9" * 3000, b"[" * 2000, b"nul", b"{}" * 1500]

    async def flood(session: aiohttp.ClientSession, worker: int) -> None:
        for n in range(250):
            body = garbage[(worker + n) % len(garbage)]
            async with session.post(strict_door.url + "/v1/registrations", data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector) as session:
        flooding = asyncio.gather(*(flood(session, worker) for worker in range(16)))
        assert await register(strict_door.url, RegistrantFactory()) == 202
        await flooding
    assert statuses == {400: 16 * 250}
    # 4,000 bad requests leave nothing behind: growth stays far below what keeping
    # even one body per request would cost.
    assert rss_bytes(pid) - before < 16 * 1024 * 1024
    assert "unhandled" not in strict_door.log_text()


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for writer in writers), return_exceptions=True)


def refused_by_http_layer(answer: bytes) -> bool:
    """aiohttp's parser answers 400 (HTTP/1.0 when it could not read the version)."""
    status_line = answer.split(b"\r\n", 1)[0]
    return status_line.startswith(b"HTTP/1.") and status_line[9:13] in (b"400 ", b"431 ")


def idle_connections_allowed() -> int:
    """As many idle connections as this machine's open-file limit allows, up to 10,000."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    # This process and the door each need a descriptor per connection, plus their own.
    return max(100, min(IDLE_CONNECTIONS_WANTED, soft - 500))


async def test_many_idle_connections_are_held_in_bounded_memory_and_capped(
    test_settings: Settings, redis_client: object, tmp_path: Path
) -> None:
    count = idle_connections_allowed()
    extra = 50
    # Room for every idle connection and the one valid registration, not for the extra ones.
    settings = with_public(test_settings, max_connections=count + 1, idle_timeout_seconds=300.0)
    with one_door(settings, tmp_path) as doors:
        pid = door_pid(doors)
        before = rss_bytes(pid)
        host, port = doors.url.removeprefix("http://").split(":")
        held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            for start in range(0, count, 500):
                held += await asyncio.gather(*(asyncio.open_connection(host, int(port))
                                               for _ in range(min(500, count - start))))
            # Every idle connection is accepted and held: none was closed on us.
            await asyncio.sleep(0.5)
            assert not any(reader.at_eof() for reader, _ in held)
            assert await register(doors.url, RegistrantFactory()) == 202
            grown = rss_bytes(pid) - before
            # A held connection costs the door a handler and a task: a few KiB.
            assert grown / count < 32 * 1024, f"{grown / count:.0f} B per idle connection"

            # Beyond max_connections the door closes new connections at once (an RST,
            # which can reach the client before its connect call returns).
            cut = 0
            for _ in range(extra):
                try:
                    reader, writer = await asyncio.open_connection(host, int(port))
                except ConnectionResetError:
                    cut += 1
                    continue
                held.append((reader, writer))
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(closed_by_door(reader), 2.0) == b"":
                        cut += 1
            # The slot the registration used is free again: exactly one extra fits.
            assert cut == extra - 1
        finally:
            await close_all([writer for _, writer in held])
        print(f"held {count} idle connections; door RSS grew {grown / count:.0f} B each")
