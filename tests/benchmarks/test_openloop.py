"""The open-loop generator against small real servers whose timing and answers we set."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from benchmarks import openloop, stack
from gelombang.processes import free_port

# What a test server does with one request body: answer (status, close the
# connection after?) or None to never answer.
Behaviour = Callable[[bytes], Awaitable[tuple[int, bool] | None]]


class Server:
    """An HTTP/1.1 server on a free port: keep-alive, Content-Length bodies, set behaviour."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.heads: list[bytes] = []
        self.port = 0
        self.handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                answer = await self.behaviour(await reader.readexactly(length))
                if answer is None:
                    await asyncio.Event().wait()  # never answers
                    return
                status, close = answer
                body = b'{"status":"queued"}'
                writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n%s\r\n%s"
                             % (status, len(body), b"Connection: close\r\n" if close else b"",
                                body))
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)


@asynccontextmanager
async def serving(behaviour: Behaviour) -> AsyncIterator[Server]:
    """Serve on 127.0.0.1 for the duration of the block."""
    server = Server(behaviour)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, backlog=1024)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        handlers = list(server.handlers)
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await listener.wait_closed()


async def status_in_body(body: bytes) -> tuple[int, bool]:
    """Answer at once with the status the body names."""
    return int(body), False


BODIES = [b"202", b"429", b"503", b"500"]


async def test_it_sends_the_scheduled_count_and_counts_each_status() -> None:
    async with serving(status_in_body) as server:
        result = await openloop.run_open_loop("127.0.0.1", server.port, "/v1/registrations",
                                              BODIES, 200, 1.0)
    assert result.offered == 200
    assert result.completed == 200
    assert result.statuses == {202: 50, 429: 50, 503: 50, 500: 50}
    assert len(result.latencies_ms) == 200
    assert len(result.accepted_latencies_ms) == 50
    assert (result.errors, result.unfinished) == (0, 0)
    assert min(result.latencies_ms) >= 0
    assert 0.98 <= result.duration_s <= 1.0
    assert all(head.startswith(b"POST /v1/registrations HTTP/1.1\r\n") for head in server.heads)


async def test_latency_runs_from_the_due_time_so_it_includes_the_server_queue() -> None:
    # One request at a time, 20 ms each: 50/s, offered 100/s. A closed-loop
    # client would see 20 ms per request; from the due time, the queue grows
    # by half a second per second, so the last requests wait about 1 s.
    lock = asyncio.Lock()

    async def serialised(body: bytes) -> tuple[int, bool]:
        async with lock:
            await asyncio.sleep(0.02)
        return 202, False

    async with serving(serialised) as server:
        result = await openloop.run_open_loop("127.0.0.1", server.port, "/", [b"{}"], 100, 1.0)
    assert result.completed == result.offered == 100
    assert min(result.accepted_latencies_ms) >= 19.0
    assert max(result.accepted_latencies_ms) >= 700.0
    assert result.percentile(50) >= 200.0
    # The arrivals did not slow down with the server: the generator sent on time.
    assert result.max_send_lag_ms < 200.0


async def test_it_opens_a_new_connection_when_every_open_one_is_busy() -> None:
    async def slow(body: bytes) -> tuple[int, bool]:
        await asyncio.sleep(0.1)
        return 202, False

    async with serving(slow) as server:
        result = await openloop.run_open_loop("127.0.0.1", server.port, "/", [b"{}"], 100, 0.5)
    assert result.completed == result.offered == 50
    # About 10 requests are in flight at any time (100/s x 100 ms).
    assert 8 <= result.connections_opened <= 50
    assert server.connections == result.connections_opened
    assert min(result.accepted_latencies_ms) >= 99.0


async def test_past_the_connection_cap_requests_wait_on_the_clock() -> None:
    async def slow(body: bytes) -> tuple[int, bool]:
        await asyncio.sleep(0.1)
        return 202, False

    async with serving(slow) as server:
        result = await openloop.run_open_loop("127.0.0.1", server.port, "/", [b"{}"], 100, 0.3,
                                              max_connections=2)
    assert result.completed == result.offered == 30
    assert result.connections_opened == server.connections == 2
    assert result.queued_for_connection >= 25
    # 15 turns of 100 ms on two connections; the last request was due at 0.29 s.
    assert max(result.accepted_latencies_ms) >= 900.0


async def test_requests_never_answered_are_reported_unfinished() -> None:
    async def never(body: bytes) -> None:
        return None

    async with serving(never) as server:
        result = await openloop.run_open_loop("127.0.0.1", server.port, "/", [b"{}"], 50, 0.2,
                                              drain_timeout=0.3)
    assert result.offered == 10
    assert (result.completed, result.errors, result.unfinished) == (0, 0, 10)
    assert result.latencies_ms == []
    assert result.statuses == {}


async def test_resets_and_refused_connections_are_errors() -> None:
    async def hang_up(body: bytes) -> tuple[int, bool]:
        raise ConnectionResetError

    async with serving(hang_up) as server:
        reset = await openloop.run_open_loop("127.0.0.1", server.port, "/", [b"{}"], 50, 0.2,
                                             drain_timeout=2.0)
    assert (reset.offered, reset.errors, reset.completed, reset.unfinished) == (10, 10, 0, 0)
    refused = await openloop.run_open_loop("127.0.0.1", free_port(), "/", [b"{}"], 50, 0.2,
                                           drain_timeout=2.0)
    assert (refused.offered, refused.errors, refused.completed) == (10, 10, 0)


async def test_headers_per_request_and_connection_close_answers() -> None:
    async def close_each(body: bytes) -> tuple[int, bool]:
        return 202, True

    async with serving(close_each) as server:
        result = await openloop.run_open_loop(
            "127.0.0.1", server.port, "/", [b"{}"], 100, 0.2,
            headers=lambda i: {"Idempotency-Key": f"k-{i}"})
    assert result.completed == result.offered == 20
    # Every answer closed its connection, so every request needed a new one.
    assert result.connections_opened == server.connections == 20
    keys = {line.split(b": ")[1] for head in server.heads for line in head.split(b"\r\n")
            if line.startswith(b"Idempotency-Key")}
    assert keys == {f"k-{i}".encode() for i in range(20)}


async def test_a_rate_profile_overrides_the_constant_rate() -> None:
    async with serving(status_in_body) as server:
        result = await openloop.run_open_loop(
            "127.0.0.1", server.port, "/", [b"202"], 1, 1.0,
            rate_at=lambda t: 100.0 if t < 0.5 else 300.0)
    # 0.5 s at 100/s and 0.5 s at 300/s.
    assert 198 <= result.offered <= 202
    assert result.statuses == {202: result.offered}


def test_percentile_interpolates_and_is_nan_without_values() -> None:
    assert openloop.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert openloop.percentile([1.0, 2.0], 50) == 1.5
    assert openloop.percentile([10.0, 0.0], 100) == 10.0
    assert openloop.percentile([], 99) != openloop.percentile([], 99)  # NaN


@pytest.mark.slow
def test_the_pinned_process_against_the_plain_aiohttp_baseline() -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.baselines.plain_aiohttp",
                               str(port)], cwd=stack.REPO_ROOT)
    try:
        stack.wait_http(f"http://127.0.0.1:{port}/v1/registrations")
        result = openloop.run_in_process(
            "127.0.0.1", port, "/v1/registrations", [b'{"a":1}', b'{"b":2}'], 300, 1.0,
            core=1 if stack.cores() > 1 else None, preconnect=4, idempotency_prefix="t")
    finally:
        server.terminate()
        server.wait(10)
    assert result.offered == 300
    assert result.statuses == {202: 300}
    assert len(result.accepted_latencies_ms) == 300
    assert result.cpu_s > 0
    assert result.percentile(99) >= result.percentile(50) > 0


async def test_each_answer_is_told_with_its_request_index() -> None:
    told: dict[int, tuple[int, bytes]] = {}
    async with serving(status_in_body) as server:
        result = await openloop.run_open_loop(
            "127.0.0.1", server.port, "/", BODIES, 200, 0.2,
            on_answer=lambda i, status, body: told.__setitem__(i, (status, body)))
    assert sorted(told) == list(range(result.offered))
    assert all(status == int(BODIES[i % len(BODIES)]) for i, (status, _) in told.items())
    assert {body for _, body in told.values()} == {b'{"status":"queued"}'}
