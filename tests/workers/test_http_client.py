"""The keep-alive HTTP client of the NIK worker, against a real aiohttp server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gelombang.processes import free_port
from workers.verification.http import HttpClient, HttpError
from workers.verification.nik_client import RETRY_AFTER_MAX_SECONDS, retry_after_seconds


@contextlib.asynccontextmanager
async def server(app: web.Application, keepalive: float = 75.0) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive,
                           shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def recording_app() -> tuple[web.Application, list[tuple[int, bytes]]]:
    seen: list[tuple[int, bytes]] = []
    app = web.Application()

    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        transport = request.transport
        assert transport is not None
        seen.append((id(transport), body))
        if request.query.get("chunked"):
            response = web.StreamResponse(status=200)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for part in (b'{"a":', b'"chunked"}'):
                await response.write(part)
            await response.write_eof()
            return response
        if request.query.get("slow"):
            await asyncio.sleep(2)
        if request.query.get("redirect"):
            raise web.HTTPFound("http://elsewhere.invalid/")
        return web.json_response({"len": len(body)}, headers={"Retry-After": "3"})

    app.router.add_post("/api/echo", echo)
    return app, seen


async def test_requests_reuse_a_kept_alive_connection() -> None:
    app, seen = recording_app()
    async with server(app) as url:
        client = HttpClient(url, connections=1, timeout_seconds=5)
        head = client.head("/api/echo", {"Content-Type": "application/json"})
        answers = [await client.post(head, b"x" * n) for n in (1, 20, 300)]
        await client.close()
    assert [a.status for a in answers] == [200, 200, 200]
    assert [a.body for a in answers] == [b'{"len": 1}', b'{"len": 20}', b'{"len": 300}']
    assert answers[0].headers["retry-after"] == "3"
    assert len({transport for transport, _ in seen}) == 1  # one connection for all three


async def test_a_chunked_answer_is_read_whole() -> None:
    app, _ = recording_app()
    async with server(app) as url:
        client = HttpClient(url + "/api", connections=2, timeout_seconds=5)
        answer = await client.post(client.head("/echo?chunked=1", {}), b"{}")
        await client.close()
    assert (answer.status, answer.body) == (200, b'{"a":"chunked"}')


async def test_a_connection_the_server_closed_is_replaced_silently() -> None:
    app, seen = recording_app()
    async with server(app, keepalive=0.2) as url:
        client = HttpClient(url, connections=1, timeout_seconds=5)
        head = client.head("/api/echo", {})
        await client.post(head, b"1")
        await asyncio.sleep(0.6)  # the server drops the idle connection
        answer = await client.post(head, b"2")
        await client.close()
    assert answer.status == 200
    assert len({transport for transport, _ in seen}) == 2


async def test_timeouts_and_refused_connections_raise_http_error() -> None:
    app, _ = recording_app()
    async with server(app) as url:
        client = HttpClient(url, connections=1, timeout_seconds=0.3)
        with pytest.raises(HttpError):
            await client.post(client.head("/api/echo?slow=1", {}), b"")
        await client.close()
    nobody = HttpClient(f"http://127.0.0.1:{free_port()}", 1, 1.0)
    with pytest.raises(HttpError):
        await nobody.post(nobody.head("/", {}), b"")


async def test_a_redirect_is_answered_not_followed() -> None:
    app, seen = recording_app()
    async with server(app) as url:
        client = HttpClient(url, connections=1, timeout_seconds=5)
        answer = await client.post(client.head("/api/echo?redirect=1", {}), b"secret")
        await client.close()
    assert answer.status == 302 and len(seen) == 1


def test_retry_after_is_capped_and_must_be_finite() -> None:
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds("1e9") == RETRY_AFTER_MAX_SECONDS
    assert retry_after_seconds("inf") is None
    assert retry_after_seconds("nan") is None
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None
