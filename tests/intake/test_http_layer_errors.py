"""What aiohttp's parser refuses is answered in the contract's JSON, quoting nothing.

Issue 17, item 9: aiohttp answers a request it cannot parse before any handler runs,
with its exception's message as plain text, and that message quotes the offending
bytes (`X-Bad\\x01: <a NIK>` came back verbatim). The door's answer is 400
`malformed_request` in the contract's error shape, the connection closed, and none
of the request's bytes in it. Against a real door process: the handler is installed
where `gelombang serve` opens its listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Final

import orjson
import pytest

from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from tests.support import DoorProcesses, door_processes

pytestmark = pytest.mark.slow

HEADER_BYTES: Final = 2048
PATIENCE: Final = 15.0


@pytest.fixture(scope="module")
def door(test_settings: Settings, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[DoorProcesses]:
    """One door process with a small header limit."""
    public = test_settings.public.model_copy(update={"max_header_bytes": HEADER_BYTES})
    settings = test_settings.model_copy(update={"public": public})
    with door_processes(settings, tmp_path_factory.mktemp("http-errors"), processes=1) as doors:
        yield doors


async def exchange(url: str, request: bytes) -> bytes:
    """Send raw bytes; everything the door answers until it closes the connection."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionResetError):
            await writer.drain()
        return await asyncio.wait_for(reader.read(), PATIENCE)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def secret() -> bytes:
    """A made-up NIK: the kind of value that must never come back."""
    return RegistrantFactory().make().nik.encode()


def refusal(secret_bytes: bytes) -> list[bytes]:
    head = b"POST /v1/registrations HTTP/1.1\r\nHost: door\r\nContent-Type: application/json\r\n"
    return [
        # The case: a control character in a header's name.
        head + b"X-Bad\x01: " + secret_bytes + b"\r\n\r\n",
        # ... and in its value.
        head + b"X-Applicant: " + secret_bytes + b"\x01\r\n\r\n",
        # A header line over public.max_header_bytes.
        head + b"X-Padding: " + secret_bytes + b"a" * (HEADER_BYTES * 2) + b"\r\n\r\n",
        # A request line that is not HTTP.
        b"GET /" + secret_bytes + b" \x01HTTP/1.1\r\n\r\n",
        # A Content-Length that is not a number.
        head + b"Content-Length: " + secret_bytes + b"x\r\n\r\n",
    ]


@pytest.mark.parametrize("case", range(5), ids=["header-name", "header-value", "long-header",
                                                "request-line", "content-length"])
async def test_a_refused_request_gets_the_contracts_json_without_its_bytes(
    door: DoorProcesses, case: int
) -> None:
    nik = secret()
    answer = await exchange(door.url, refusal(nik)[case])
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *fields = head.split(b"\r\n")
    assert status_line.startswith(b"HTTP/1.") and status_line[9:13] == b"400 "
    headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(b":") for f in fields)}
    assert headers[b"content-type"] == b"application/json; charset=utf-8"
    # exchange() returned, so the door closed the connection (aiohttp answers HTTP/1.0).
    assert orjson.loads(body) == {"error": {
        "code": "malformed_request", "message": "The request is not well-formed HTTP."}}
    # No part of what was sent comes back (a bool: a failure prints no value).
    assert (nik in answer) is False


async def test_the_door_still_serves_after_refusals(door: DoorProcesses) -> None:
    answer = await exchange(door.url, b"GET /healthz HTTP/1.1\r\nHost: door\r\n"
                                      b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert "unhandled" not in door.log_text()
