"""intake/hot_path.py: a registration POST past the application's routing, the rest through it."""

from __future__ import annotations

import logging

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from intake import hot_path, registration_lane
from intake.door import Door
from loadtest.registrants import RegistrantFactory
from tests.intake.door_helpers import DoorUnderTest

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(("method", "path", "headers", "takes_hot_path"), [
    ("POST", "/v1/registrations", {}, True),
    ("GET", "/v1/registrations", {}, False),
    ("PUT", "/v1/registrations", {}, False),
    ("POST", "/v1/registrations?source=form", {}, False),
    ("POST", "/v1/registrations/", {}, False),
    ("POST", "/v1/%72egistrations", {}, False),
    ("POST", "/v1/registrations", {"Expect": "100-continue"}, False),
    ("POST", "/", {}, False),
])
async def test_only_a_plain_registration_post_skips_the_application(
        method: str, path: str, headers: dict[str, str], takes_hot_path: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[str] = []

    async def register(door: Door, request: web.BaseRequest) -> web.Response:
        taken.append("hot path")
        return web.Response(status=202)

    async def application(request: web.BaseRequest) -> web.StreamResponse:
        taken.append("application")
        return web.Response(status=404)

    monkeypatch.setattr(hot_path, "register", register)
    handle = hot_path.registrations_first(None, application)  # type: ignore[arg-type]
    await handle(make_mocked_request(method, path, headers=headers))
    assert taken == ["hot path" if takes_hot_path else "application"]


async def test_requests_the_application_answers_keep_their_answers(
        door_under_test: DoorUnderTest, registrants: RegistrantFactory) -> None:
    public = door_under_test.public
    body = orjson.dumps(registrants.make().body())
    async with public.post("/v1/registrations?source=form", data=body, headers=JSON) as reply:
        assert reply.status == 202  # the router ignores the query, as it always did
    async with public.post("/v1/registrations", data=orjson.dumps(registrants.make().body()),
                           headers={**JSON, "Expect": "100-continue"}) as reply:
        assert reply.status == 202
    async with public.get("/v1/registrations") as reply:
        assert reply.status == 405
        assert reply.headers["Allow"] == "POST"
        assert (await reply.json())["error"]["code"] == "method_not_allowed"


# A plain registration is the lane's (intake/registration_lane.py); one with a
# Content-Encoding header goes aiohttp's way, through the hot path.
@pytest.mark.parametrize("headers", [JSON, {**JSON, "Content-Encoding": "identity"}],
                         ids=["lane", "aiohttp"])
async def test_an_unexpected_error_is_a_contract_500_logged_by_its_type_only(
        door_under_test: DoorUnderTest, registrants: RegistrantFactory, headers: dict[str, str],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    secret = "3171012345678901"

    async def failing(*args: object) -> web.Response:
        raise ValueError(f"cannot handle {secret}")

    monkeypatch.setattr(hot_path, "register", failing)
    monkeypatch.setattr(registration_lane, "decide", failing)
    with caplog.at_level(logging.ERROR, logger="intake.hot_path"):
        async with door_under_test.public.post(
                "/v1/registrations", data=orjson.dumps(registrants.make().body()),
                headers=headers) as reply:
            assert reply.status == 500
            assert (await reply.json())["error"]["code"] == "internal_error"
    assert "unhandled ValueError in POST registrations.create" in caplog.text
    assert secret not in caplog.text
