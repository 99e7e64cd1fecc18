"""The 4 KiB body limit at its boundaries, on both framings (issue 17, item 10).

docs/api.md: a body of at most 4 KiB is read, a larger one is 413. aiohttp 3.10-3.13
compared the body it read with `client_max_size` by `>=`, so a body of exactly
4,096 bytes was refused 413 (fixed in 3.14.0); pyproject.toml's floor keeps those
versions out, and these tests fail on them.
"""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
from packaging.requirements import Requirement

from intake.registrations import MAX_BODY_BYTES
from loadtest.registrants import RegistrantFactory
from tests.intake.door_helpers import DoorUnderTest

URL = "/v1/registrations"
JSON = {"Content-Type": "application/json"}
PYPROJECT: Final = Path(__file__).resolve().parents[2] / "pyproject.toml"
# The last aiohttp release that refused a body of exactly client_max_size bytes.
LAST_OFF_BY_ONE: Final = "3.13.5"


def padded(body: dict[str, Any], size: int) -> bytes:
    """The body as JSON, padded with trailing whitespace (still JSON) to `size` bytes."""
    raw = orjson.dumps(body)
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    """The body without Content-Length: chunked transfer coding, 1,000 bytes a chunk."""
    for start in range(0, len(data), 1000):
        yield data[start:start + 1000]


async def send(d: DoorUnderTest, data: bytes, chunked: bool) -> tuple[int, str]:
    payload: Any = chunks(data) if chunked else data
    async with d.public.post(URL, data=payload, headers=JSON) as response:
        body = orjson.loads(await response.read())
        return response.status, body.get("error", {}).get("code", "")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("size", "status", "code"), [
    (MAX_BODY_BYTES - 1, 202, ""),
    (MAX_BODY_BYTES, 202, ""),
    (MAX_BODY_BYTES + 1, 413, "payload_too_large"),
])
async def test_a_registration_padded_to_the_limit(
    door_under_test: DoorUnderTest, registrants: RegistrantFactory,
    size: int, status: int, code: str, chunked: bool,
) -> None:
    data = padded(registrants.make().body(), size)
    assert await send(door_under_test, data, chunked) == (status, code)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_of_exactly_4096_bytes_reaches_the_field_checks(
    door_under_test: DoorUnderTest, chunked: bool
) -> None:
    data = padded({}, 4096)
    assert len(data) == MAX_BODY_BYTES == 4096
    assert await send(door_under_test, data, chunked) == (422, "validation_failed")


def test_the_aiohttp_floor_excludes_the_off_by_one_releases() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (aiohttp,) = (Requirement(d) for d in dependencies if Requirement(d).name == "aiohttp")
    assert not aiohttp.specifier.contains(LAST_OFF_BY_ONE)
    assert aiohttp.specifier.contains("3.14.0")
