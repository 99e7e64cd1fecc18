"""A body's unknown keys are reported without quoting them (issue 17, item 8).

A key is client input as much as a value: a client that puts an email address or a
NIK in a key must not see it quoted back in the 422 (docs/api.md: no response body ever
contains a submitted NIK, phone number or email address).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Final

import orjson
from openapi_schema_validator import OAS31Validator

from loadtest.registrants import RegistrantFactory
from tests.intake.door_helpers import DoorUnderTest

URL = "/v1/registrations"
DOCUMENT: Final[dict[str, Any]] = json.loads(
    resources.files("intake").joinpath("openapi.json").read_text(encoding="utf-8")
)


def error_validator() -> Any:
    schema = {"components": DOCUMENT["components"], **DOCUMENT["components"]["schemas"]["Error"]}
    return OAS31Validator(schema)


async def post(d: DoorUnderTest, body: Any) -> tuple[int, bytes]:
    async with d.public.post(URL, data=orjson.dumps(body),
                             headers={"Content-Type": "application/json"}) as response:
        return response.status, await response.read()


async def test_unknown_keys_are_counted_not_quoted(door_under_test: DoorUnderTest,
                                                   registrants: RegistrantFactory) -> None:
    person = registrants.make()
    body = {**person.body(), person.email: 1, person.nik: 2, person.phone: 3}
    status, raw = await post(door_under_test, body)
    assert status == 422
    # any(): a failure names no value (this test's output stays free of personal data).
    assert not any(v.encode() in raw for v in (person.email, person.nik, person.phone))
    error = orjson.loads(raw)["error"]
    assert error["fields"] == {"_unknown": "unknown_field"}
    assert error["unknown_fields"] == 3
    error_validator().validate(orjson.loads(raw))


async def test_unknown_keys_beside_bad_fields(door_under_test: DoorUnderTest,
                                              registrants: RegistrantFactory) -> None:
    person = registrants.make()
    status, raw = await post(door_under_test, {**person.body(), "consent": False,
                                               "middle_name": "x"})
    assert status == 422
    error = orjson.loads(raw)["error"]
    assert error["fields"] == {"consent": "must_be_true", "_unknown": "unknown_field"}
    assert error["unknown_fields"] == 1
    assert b"middle_name" not in raw


async def test_no_count_without_unknown_keys(door_under_test: DoorUnderTest,
                                             registrants: RegistrantFactory) -> None:
    status, raw = await post(door_under_test, {**registrants.make().body(), "consent": False})
    assert status == 422
    assert "unknown_fields" not in orjson.loads(raw)["error"]
    error_validator().validate(orjson.loads(raw))


def test_the_error_schema_allows_the_count_only_beside_fields() -> None:
    validator = error_validator()
    message = "m"
    assert not validator.is_valid({"error": {"code": "not_found", "message": message,
                                             "unknown_fields": 1}})
    assert not validator.is_valid({"error": {"code": "validation_failed", "message": message,
                                             "fields": {"_unknown": "unknown_field"},
                                             "unknown_fields": 0}})
