"""The OpenAPI document of the public port describes exactly the contract (docs/api.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from typing import Any, Final

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

# Every error code docs/api.md names for the public port (the admin port's
# `unauthorized` is not one of them).
PUBLIC_ERROR_CODES: Final = frozenset({
    "unsupported_media_type", "payload_too_large", "malformed_json",
    "invalid_idempotency_key", "validation_failed", "admission_limited", "backlog_full",
    "queue_unavailable", "intake_closed", "not_found", "invalid_token", "token_expired",
    # Added to the original list, backward compatible: GET status while PostgreSQL is down.
    "status_unavailable",
    # Added for slow and abusive clients (issue 7), backward compatible: a body that
    # never arrives, and the per-client-IP limit (off by default).
    "request_timeout", "client_limited",
    # Added with the resend of the verification email (the priority lane), backward compatible.
    "nothing_to_resend", "resend_too_soon",
    # Added so that no failure is answered for a registration that was queued (issue 17):
    # the queue took the request and did not say in time what it did.
    "outcome_unknown",
    # Added with the waiting room (issue 18), backward compatible: a client that never
    # sends a ticket meets only `queued`, a 429 it already retries after Retry-After.
    "queued", "invalid_ticket", "ticket_expired", "ticket_used",
    *{"malformed_request", "method_not_allowed"},
    # Added with the waiting room's verifiable lottery (issue 18), backward compatible: a
    # wave's draw asked for before its opening.
    "wave_not_open",
})
# Answered whatever the path, before any operation (issue 17): a request the HTTP layer
# cannot parse, and a method the path does not serve. The document's description says so.
HTTP_LAYER_CODES: Final = frozenset({"malformed_request", "method_not_allowed"})
# The field codes of docs/api.md's validation table.
FIELD_CODES: Final = frozenset({
    "required", "wrong_type", "unknown_field", "invalid_format", "invalid_region",
    "invalid_date", "invalid_serial", "too_short", "too_long", "invalid_characters",
    "birth_date_mismatch", "underage", "must_be_true",
})
REQUEST_FIELDS: Final = frozenset({"nik", "full_name", "email", "phone", "birth_date", "consent"})
# Method, path and status codes of every operation of the public port.
OPERATIONS: Final = {
    ("post", "/v1/registrations"): {"202", "400", "403", "408", "409", "410", "413", "415",
                                    "422", "429", "503"},
    ("get", "/v1/registrations/{registration_id}"): {"200", "404", "429", "503"},
    ("post", "/v1/registrations/{registration_id}/verification-email"): {
        "202", "404", "409", "429", "503"},
    ("get", "/v1/verify-email"): {"200", "400", "410", "429", "503"},
    ("get", "/healthz"): {"200"},
    ("get", "/readyz"): {"200", "503"},
    ("get", "/openapi.json"): {"200"},
    ("post", "/v1/queue/tickets"): {"202", "400", "404", "415", "422", "503"},
    ("get", "/v1/queue/tickets/{ticket}"): {"200", "403", "404", "409", "410", "503"},
    ("delete", "/v1/queue/tickets/{ticket}"): {"204", "403", "404", "503"},
    ("get", "/v1/queue/waves/{wave}"): {"200", "404", "503"},
    ("get", "/v1/queue/waves/{wave}/draw"): {"200", "404", "409", "422", "503"},
}
HTTP_METHODS: Final = frozenset({"get", "put", "post", "delete", "options", "head", "patch",
                                 "trace"})

DOCUMENT: Final[dict[str, Any]] = json.loads(
    resources.files("intake").joinpath("openapi.json").read_text(encoding="utf-8")
)


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` (one level is all the document uses)."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = DOCUMENT
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    assert isinstance(target, dict)
    return target


def _schema(name: str) -> dict[str, Any]:
    schema = DOCUMENT["components"]["schemas"][name]
    assert isinstance(schema, dict)
    return schema


def _validator(schema: dict[str, Any]) -> Any:
    # The root carries the document's components so that `#/components/...` resolves.
    root = {"components": DOCUMENT["components"], **schema}
    return OAS31Validator(root, format_checker=OAS31Validator.FORMAT_CHECKER)


def _operation(method: str, path: str) -> dict[str, Any]:
    operation = DOCUMENT["paths"][path][method]
    assert isinstance(operation, dict)
    return operation


def _json_schema(method: str, path: str, status: str) -> dict[str, Any]:
    response = _resolve(_operation(method, path)["responses"][status])
    schema = response["content"]["application/json"]["schema"]
    assert isinstance(schema, dict)
    return schema


def _response_codes(schema: dict[str, Any]) -> set[str]:
    """The error codes a narrowed error schema (allOf Error + a code rule) allows."""
    narrowing = schema["allOf"][1]["properties"]["error"]["properties"]["code"]
    return {narrowing["const"]} if "const" in narrowing else set(narrowing["enum"])


def _examples(node: object) -> Iterator[tuple[dict[str, Any], object]]:
    """Every (schema, example) pair of media types and schemas in the document."""
    if isinstance(node, dict):
        if "example" in node and isinstance(node.get("schema"), dict):
            yield node["schema"], node["example"]
        elif "example" in node and "type" in node:
            yield node, node["example"]
        for value in node.values():
            yield from _examples(value)
    elif isinstance(node, list):
        for value in node:
            yield from _examples(value)


def _valid_registration(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "nik": "3171234501900001", "full_name": "Siti Rahmawati",
        "email": "siti@example.co.id", "phone": "0812-3456-7890",
        "birth_date": "1990-01-05", "consent": True,
    }
    body.update(changes)
    return body


def test_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT, cls=OpenAPIV31SpecValidator)
    assert DOCUMENT["openapi"] == "3.1.0"
    assert DOCUMENT["info"]["title"] == "Gelombang public API"
    assert DOCUMENT["info"]["version"] == "1.0.0"
    assert DOCUMENT["servers"] == [{"url": "/"}]


def test_document_lists_exactly_the_public_operations() -> None:
    listed = {
        (method, path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert listed == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), sorted(OPERATIONS))
def test_each_operation_answers_exactly_the_contracts_statuses(method: str, path: str) -> None:
    assert set(_operation(method, path)["responses"]) == OPERATIONS[method, path]


def test_error_code_enum_is_the_contracts() -> None:
    codes = _schema("Error")["properties"]["error"]["properties"]["code"]["enum"]
    assert len(codes) == len(set(codes))
    assert set(codes) == PUBLIC_ERROR_CODES


def test_error_requires_code_and_message() -> None:
    error = _schema("Error")
    assert error["required"] == ["error"]
    assert set(error["properties"]["error"]["required"]) == {"code", "message"}


def test_field_code_enum_is_the_contracts() -> None:
    fields = _schema("Error")["properties"]["error"]["properties"]["fields"]
    codes = fields["additionalProperties"]["enum"]
    assert len(codes) == len(set(codes))
    assert set(codes) == FIELD_CODES


def test_every_error_code_is_answered_and_no_other() -> None:
    answered: list[str] = []
    for (method, path), statuses in OPERATIONS.items():
        for status in statuses:
            if status.startswith("4") or (status == "503" and path.startswith("/v1/")):
                answered += _response_codes(_json_schema(method, path, status))
    assert set(answered) == PUBLIC_ERROR_CODES - HTTP_LAYER_CODES
    # The codes with more than one home: the status read, the email link and the
    # resend (status_unavailable); the status read, the resend, the three ticket routes
    # with the waiting room off and both wave reads (not_found); both POSTs, the status
    # read and the email link (client_limited); the registration, the ticket routes and
    # the wave reads (the ticket codes, malformed_json, unsupported_media_type,
    # validation_failed, queue_unavailable, intake_closed).
    assert sorted(answered) == sorted([
        *PUBLIC_ERROR_CODES - HTTP_LAYER_CODES,
        "status_unavailable", "status_unavailable", *["not_found"] * 6,
        *["client_limited"] * 3, *["invalid_ticket"] * 2, *["queue_unavailable"] * 5,
        "ticket_used", "ticket_expired", "malformed_json", "unsupported_media_type",
        *["validation_failed"] * 2, "intake_closed"])


def test_the_status_read_describes_queued_ids_and_its_client_limit() -> None:
    path = "/v1/registrations/{registration_id}"
    registration = _validator(_resolve(_json_schema("get", path, "200")))
    registration.validate({"registration_id": "0193a4f2-6c1e-7b3a-9f00-1c2d3e4f5a6b",
                           "state": "queued", "email_verification": "pending",
                           "nik_verification": "pending", "updated_at": "2026-11-22T10:00:00Z"})
    for method, limited in (("get", path), ("get", "/v1/verify-email")):
        response = _resolve(_operation(method, limited)["responses"]["429"])
        assert set(response["headers"]) == {"Retry-After", "RateLimit-Policy", "RateLimit"}
        assert _response_codes(_json_schema(method, limited, "429")) == {"client_limited"}


def test_request_schema_requires_exactly_the_contracts_fields() -> None:
    body = _operation("post", "/v1/registrations")["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"application/json"}
    schema = _resolve(body["content"]["application/json"]["schema"])
    assert set(schema["required"]) == REQUEST_FIELDS
    assert set(schema["properties"]) == REQUEST_FIELDS
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("change", [
    {},
    {"phone": "+62 812 3456 7890"},
    {"phone": "628123456789"},
    {"phone": "0812345678"},
    {"phone": "0812345678901"},
    {"phone": "+628-1234-5678-901"},
])
def test_request_schema_accepts_a_valid_registration(change: dict[str, object]) -> None:
    _validator(_schema("RegistrationRequest")).validate(_valid_registration(**change))


@pytest.mark.parametrize("change", [
    {"nik": "317123450190000"},
    {"nik": "317123450190000a"},
    {"nik": 3171234501900001},
    {"full_name": ""},
    {"full_name": "a" * 101},
    {"email": "no-at-sign"},
    {"email": "a@" + "b" * 250 + ".id"},
    {"phone": "0712345678"},
    {"phone": "081234567"},
    {"phone": "08123456789012"},
    {"phone": "62 0812345678"},
    {"birth_date": "1990-1-05"},
    {"birth_date": "1990-02-30"},
    {"consent": False},
    {"extra": 1},
])
def test_request_schema_rejects_what_the_contract_rejects(change: dict[str, object]) -> None:
    assert not _validator(_schema("RegistrationRequest")).is_valid(_valid_registration(**change))


def test_request_schema_requires_every_field() -> None:
    validator = _validator(_schema("RegistrationRequest"))
    for field in REQUEST_FIELDS:
        body = _valid_registration()
        del body[field]
        assert not validator.is_valid(body), field


def test_idempotency_key_header_is_optional_and_patterned() -> None:
    parameter, _ = (
        _resolve(p) for p in _operation("post", "/v1/registrations")["parameters"]
    )
    assert (parameter["name"], parameter["in"], parameter["required"]) == (
        "Idempotency-Key", "header", False
    )
    assert parameter["schema"]["pattern"] == "^[A-Za-z0-9_-]{1,64}$"


def test_rejections_carry_the_contracts_headers() -> None:
    responses = _operation("post", "/v1/registrations")["responses"]
    assert set(_resolve(responses["202"])["headers"]) == {"Location"}
    # Location with `queued` (a place in the waiting room), the RateLimit fields with
    # the buckets' own refusals.
    assert set(_resolve(responses["429"])["headers"]) == {
        "Retry-After", "RateLimit-Policy", "RateLimit", "Location"
    }
    assert set(_resolve(responses["503"])["headers"]) == {"Retry-After", "Location"}
    retry_after = _resolve(_resolve(responses["503"])["headers"]["Retry-After"])
    assert retry_after["schema"] == {"type": "integer", "minimum": 1}


def test_the_resend_answers_the_contracts_headers_and_codes() -> None:
    path = "/v1/registrations/{registration_id}/verification-email"
    operation = _operation("post", path)
    assert "requestBody" not in operation
    responses = operation["responses"]
    assert set(_resolve(responses["429"])["headers"]) == {
        "Retry-After", "RateLimit-Policy", "RateLimit"
    }
    assert set(_resolve(responses["503"])["headers"]) == {"Retry-After"}
    assert _response_codes(_json_schema("post", path, "429")) == {"resend_too_soon",
                                                                  "client_limited"}
    assert _response_codes(_json_schema("post", path, "409")) == {"nothing_to_resend"}
    accepted = _resolve(_json_schema("post", path, "202"))
    _validator(accepted).validate({"email_verification": "pending", "resend_after_seconds": 60})
    assert not _validator(accepted).is_valid({"email_verification": "sent",
                                              "resend_after_seconds": 60})


def test_the_http_layers_own_answers_are_described() -> None:
    description = DOCUMENT["info"]["description"]
    assert all(f"`{code}`" in description for code in HTTP_LAYER_CODES)
    assert "`Allow`" in description


def test_every_answered_error_code_has_a_message() -> None:
    responses = pytest.importorskip("intake.responses")
    assert PUBLIC_ERROR_CODES <= set(responses.MESSAGES)


def test_verify_email_answers_json_and_html() -> None:
    responses = _operation("get", "/v1/verify-email")["responses"]
    for status in ("200", "400", "410"):
        assert set(_resolve(responses[status])["content"]) == {"application/json", "text/html"}


def test_fields_appear_only_on_validation_failed() -> None:
    validator = _validator(_schema("Error"))
    message = "m"
    assert validator.is_valid({"error": {"code": "validation_failed", "message": message,
                                         "fields": {"body": "wrong_type"}}})
    assert not validator.is_valid({"error": {"code": "validation_failed", "message": message}})
    assert not validator.is_valid({"error": {"code": "not_found", "message": message,
                                             "fields": {"nik": "required"}}})
    assert not validator.is_valid({"error": {"code": "validation_failed", "message": message,
                                             "fields": {"nik": "bogus"}}})


def test_every_example_matches_its_schema() -> None:
    pairs = list(_examples(DOCUMENT["paths"])) + list(_examples(DOCUMENT["components"]))
    assert len(pairs) >= 5
    for schema, example in pairs:
        _validator(schema).validate(example)


def test_field_codes_match_the_validator() -> None:
    validation = pytest.importorskip("intake.validation")
    allowed = set().union(*validation.FIELD_CODES.values())
    fields = _schema("Error")["properties"]["error"]["properties"]["fields"]
    assert allowed == set(fields["additionalProperties"]["enum"])
