"""A method a path does not serve: 405 with RFC 9110's Allow header (issue 17, item 17).

RFC 9110 section 15.5.6: a 405 MUST carry Allow, listing the methods the target
resource supports. Schemathesis's unsupported_method check found it missing on every
operation.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Final

import orjson
import pytest

from tests.intake.door_helpers import DoorUnderTest

DOCUMENT: Final[dict[str, Any]] = json.loads(
    resources.files("intake").joinpath("openapi.json").read_text(encoding="utf-8")
)
HTTP_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")
SOME_ID: Final = "0193a4f2-6c1e-7b3a-9f00-1c2d3e4f5a6b"
# Each documented path, concrete, with the methods the document gives it.
PATHS: Final = {
    path.replace("{registration_id}", SOME_ID).replace("{wave}", "gelombang-1")
    .replace("{ticket}", "q1.k1.dGlja2V0.bWFj"): {
        method.upper() for method in item if method != "parameters"}
    for path, item in DOCUMENT["paths"].items()
}


@pytest.mark.parametrize("path", sorted(PATHS))
async def test_every_other_method_is_405_with_allow(door_under_test: DoorUnderTest,
                                                    path: str) -> None:
    for method in HTTP_METHODS:
        if method in PATHS[path]:
            continue
        async with door_under_test.public.request(method, path) as response:
            assert response.status == 405, (method, path)
            allowed = {m.strip() for m in response.headers["Allow"].split(",")}
            assert allowed == PATHS[path], (method, path)
            if method != "HEAD":
                body = orjson.loads(await response.read())
                assert body["error"]["code"] == "method_not_allowed"
