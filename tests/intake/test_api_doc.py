"""docs/api.md and intake/openapi.json state the same public contract.

Both are parsed into one shape (operations with their statuses, error codes
and headers; the answers of any path; the error and field code lists) and
compared both ways, so a path, status, code or header added to one side
only fails here.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
API_DOC: Final = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
DOCUMENT: Final[dict[str, Any]] = json.loads(
    (ROOT / "intake" / "openapi.json").read_text(encoding="utf-8"))
HTTP_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ANY_PATH: Final = ("*", "*")

_OPERATION_HEADING = re.compile(r"### (GET|PUT|POST|DELETE|PATCH|HEAD|OPTIONS) (/\S*)$")
_TICKED = re.compile(r"`([^`]+)`")
# How the OpenAPI document's description words the HTTP layer's answers: "400 `code`",
# "an `Allow` header".
_STATUS_CODE = re.compile(r"(\d{3}) `([a-z_]+)`")
_NAMED_HEADER = re.compile(r"`([A-Z][A-Za-z-]+)` header")


@dataclass
class Answer:
    """What one status of one operation may carry."""

    codes: set[str] = field(default_factory=set)
    headers: set[str] = field(default_factory=set)


@dataclass
class Contract:
    """The public port's contract, as either side states it."""

    operations: dict[tuple[str, str], dict[str, Answer]] = field(default_factory=dict)
    error_codes: dict[str, set[str]] = field(default_factory=dict)  # code -> statuses
    field_codes: set[str] = field(default_factory=set)
    request_fields: set[str] = field(default_factory=set)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_doc(text: str) -> Contract:
    """The public port's section of docs/api.md: headings name operations, tables answer."""
    contract = Contract()
    in_public = False
    heading: str | None = None
    columns: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            in_public = line.startswith("## Public port")
            heading, columns = None, None
            continue
        if not in_public:
            continue
        if line.startswith("###"):
            heading, columns = line.strip(), None
            continue
        if not line.startswith("|"):
            columns = None
            continue
        cells = _cells(line)
        if columns is None:
            columns = [cell.lower() for cell in cells]
            continue
        if set("".join(cells)) <= set("-: "):
            continue  # the separator row
        _add_row(contract, heading, dict(zip(columns, cells, strict=True)))
    return contract


def _add_row(contract: Contract, heading: str | None, row: dict[str, str]) -> None:
    if heading is None:
        return
    operation = _OPERATION_HEADING.fullmatch(heading)
    if "status" in row and "codes" in row and (operation or heading == "### Any path"):
        key = (operation[1].lower(), operation[2]) if operation else ANY_PATH
        answer = Answer(set(_TICKED.findall(row["codes"])),
                        set(_TICKED.findall(row.get("headers", ""))))
        assert row["status"] not in contract.operations.setdefault(key, {}), (key, row)
        contract.operations[key][row["status"]] = answer
    elif heading == "### Error codes" and "code" in row:
        contract.error_codes[_TICKED.findall(row["code"])[0]] = {
            status.strip() for status in row["status"].split(",")}
    elif heading == "#### Fields" and "field codes" in row:
        contract.field_codes |= set(_TICKED.findall(row["field codes"]))
        contract.request_fields |= set(_TICKED.findall(row["field"]))


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = document
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    assert isinstance(target, dict)
    return target


def _narrowed_codes(document: dict[str, Any], response: dict[str, Any]) -> set[str]:
    """The error codes a response's JSON schema allows (allOf Error + a code rule)."""
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    schema = _resolve(document, schema)
    for part in schema.get("allOf", []):
        rule = part.get("properties", {}).get("error", {}).get("properties", {}).get("code")
        if rule is not None:
            return {rule["const"]} if "const" in rule else set(rule["enum"])
    return set()


def parse_spec(document: dict[str, Any]) -> Contract:
    """The same shape from the OpenAPI document."""
    contract = Contract()
    for path, item in document["paths"].items():
        for method in HTTP_METHODS:
            if method not in item:
                continue
            answers = contract.operations.setdefault((method, path), {})
            for status, response in item[method]["responses"].items():
                resolved = _resolve(document, response)
                answers[status] = Answer(_narrowed_codes(document, resolved),
                                         set(resolved.get("headers", {})))
    error = document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    enum = error["code"]["enum"]
    contract.error_codes = {code: set() for code in enum}
    for answers in list(contract.operations.values()):
        for status, answer in answers.items():
            for code in answer.codes:
                contract.error_codes.setdefault(code, set()).add(status)
    # What no operation answers is the HTTP layer's, worded in the document's description.
    description = document["info"]["description"]
    any_path: dict[str, Answer] = {}
    for status, code in _STATUS_CODE.findall(description):
        if code in contract.error_codes and not contract.error_codes[code]:
            any_path.setdefault(status, Answer()).codes.add(code)
            contract.error_codes[code].add(status)
    headers = set(_NAMED_HEADER.findall(description))
    for answer in any_path.values():
        answer.headers = {h for h in headers if h in _sentences_naming(description, answer)}
    contract.operations[ANY_PATH] = any_path
    request = _resolve(document, document["paths"]["/v1/registrations"]["post"]["requestBody"]
                       ["content"]["application/json"]["schema"])
    contract.request_fields = set(request["properties"])
    contract.field_codes = set(error["fields"]["additionalProperties"]["enum"])
    return contract


def _sentences_naming(description: str, answer: Answer) -> str:
    """The parts of the description that name the answer's codes (its headers are named there)."""
    return " ".join(sentence for sentence in description.split("; ")
                    if any(f"`{code}`" in sentence for code in answer.codes))


def disagreements(doc: Contract, spec: Contract) -> list[str]:
    """Every way the two sides differ, worded for the failure message."""
    return [*_operation_disagreements(doc, spec), *_code_disagreements(doc, spec)]


def _one_sided(what: str, ours: Iterable[str], theirs: Iterable[str]) -> list[str]:
    ours, theirs = set(ours), set(theirs)
    return [f"{what}{name}: in {'docs/api.md' if name in ours else 'openapi.json'} only"
            for name in sorted(ours ^ theirs)]


def _operation_disagreements(doc: Contract, spec: Contract) -> list[str]:
    found: list[str] = []
    for key in sorted(doc.operations.keys() | spec.operations.keys()):
        name = " ".join(key).upper() if key != ANY_PATH else "any path"
        if key not in spec.operations or key not in doc.operations:
            found += _one_sided("", {name} if key in doc.operations else set(),
                                {name} if key in spec.operations else set())
            continue
        ours, theirs = doc.operations[key], spec.operations[key]
        found += _one_sided(f"{name} ", ours, theirs)
        for status in sorted(ours.keys() & theirs.keys()):
            for part in ("codes", "headers"):
                mine, other = getattr(ours[status], part), getattr(theirs[status], part)
                if mine != other:
                    found.append(f"{name} {status}: {part} {sorted(mine)} in docs/api.md, "
                                 f"{sorted(other)} in openapi.json")
    return found


def _code_disagreements(doc: Contract, spec: Contract) -> list[str]:
    found = [line.replace(" only", "'s list only")
             for line in _one_sided("error code ", doc.error_codes, spec.error_codes)]
    for code in sorted(doc.error_codes.keys() & spec.error_codes.keys()):
        if doc.error_codes[code] != spec.error_codes[code]:
            found.append(f"error code {code}: status {sorted(doc.error_codes[code])} in "
                         f"docs/api.md, answered as {sorted(spec.error_codes[code])}")
    answered = {code for answers in doc.operations.values()
                for answer in answers.values() for code in answer.codes}
    found += [f"error code {code}: answered in docs/api.md, not in its list"
              for code in sorted(answered - doc.error_codes.keys())]
    found += _one_sided("field code ", doc.field_codes, spec.field_codes)
    found += _one_sided("request field ", doc.request_fields, spec.request_fields)
    return found


def test_docs_api_md_and_openapi_json_agree() -> None:
    assert disagreements(parse_doc(API_DOC), parse_spec(DOCUMENT)) == []


def test_the_doc_parser_finds_the_whole_contract() -> None:
    # Two empty parses would agree: the doc side must find what the page says.
    doc = parse_doc(API_DOC)
    assert set(doc.operations) == {
        ANY_PATH, ("post", "/v1/registrations"), ("get", "/v1/registrations/{registration_id}"),
        ("post", "/v1/registrations/{registration_id}/verification-email"),
        ("get", "/v1/verify-email"), ("get", "/healthz"), ("get", "/readyz"),
        ("get", "/openapi.json"), ("post", "/v1/queue/tickets"),
        ("get", "/v1/queue/tickets/{ticket}"), ("delete", "/v1/queue/tickets/{ticket}"),
        ("get", "/v1/queue/waves/{wave}"), ("get", "/v1/queue/waves/{wave}/draw"),
    }
    assert doc.operations[ANY_PATH]["405"].headers == {"Allow"}
    create = doc.operations["post", "/v1/registrations"]
    assert create["503"].codes == {"backlog_full", "queue_unavailable", "outcome_unknown",
                                   "intake_closed"}
    assert create["429"].headers == {"Retry-After", "RateLimit-Policy", "RateLimit", "Location"}
    assert create["202"].headers == {"Location"}
    assert len(doc.error_codes) == 25
    assert doc.error_codes["outcome_unknown"] == {"503"}
    assert len(doc.field_codes) == 13
    assert doc.request_fields == {"nik", "full_name", "email", "phone", "birth_date", "consent"}


def test_the_spec_parser_finds_the_http_layers_answers() -> None:
    spec = parse_spec(DOCUMENT)
    assert spec.operations[ANY_PATH] == {
        "400": Answer({"malformed_request"}, set()),
        "405": Answer({"method_not_allowed"}, {"Allow"}),
    }


def _doc_with(after: str, line: str) -> str:
    """docs/api.md with one line inserted after the first line that starts so."""
    lines = API_DOC.splitlines()
    index = next(i for i, text in enumerate(lines) if text.startswith(after))
    return "\n".join([*lines[:index + 1], line, *lines[index + 1:]])


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(_doc_with("| 200 | | | the process runs |", "| 500 | | | crashed |"),
                 "GET /HEALTHZ 500: in docs/api.md only", id="a status"),
    pytest.param(API_DOC.replace("| 413 | `payload_too_large` |",
                                 "| 413 | `payload_too_large`, `body_huge` |"),
                 "POST /V1/REGISTRATIONS 413: codes", id="a code on a status"),
    pytest.param(API_DOC.replace("| 413 | `payload_too_large` | |",
                                 "| 413 | `payload_too_large` | `Retry-After` |"),
                 "POST /V1/REGISTRATIONS 413: headers", id="a header"),
    pytest.param(API_DOC.replace("### Error codes", "### GET /v1/extra\n\n"
                                 "| status | codes | headers | when |\n|---|---|---|---|\n"
                                 "| 200 | | | |\n\n### Error codes"),
                 "GET /V1/EXTRA: in docs/api.md only", id="a path"),
    pytest.param(_doc_with("| `status_unavailable` | 503 |", "| `teapot` | 418 |"),
                 "error code teapot: in docs/api.md's list only", id="a listed code"),
    pytest.param(API_DOC.replace("`invalid_serial` |", "`invalid_serial`, `bad_luck` |"),
                 "field code bad_luck: in docs/api.md only", id="a field code"),
])
def test_what_only_the_doc_has_is_found(text: str, expected: str) -> None:
    assert text != API_DOC
    found = disagreements(parse_doc(text), parse_spec(DOCUMENT))
    assert any(line.startswith(expected) for line in found), found


def _healthz_500(document: dict[str, Any]) -> None:
    document["paths"]["/healthz"]["get"]["responses"]["500"] = {"description": "crashed"}


def _new_path(document: dict[str, Any]) -> None:
    document["paths"]["/v1/extra"] = {"get": {"responses": {"200": {"description": "x"}}}}


def _new_code(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    error["properties"]["code"]["enum"].append("teapot")


def _new_answered_code(document: dict[str, Any]) -> None:
    name = document["paths"]["/v1/registrations"]["post"]["responses"]["503"]["$ref"]
    unavailable = document["components"]["responses"][name.rsplit("/", 1)[1]]
    schema = unavailable["content"]["application/json"]["schema"]["allOf"][1]
    schema["properties"]["error"]["properties"]["code"]["enum"].append("intake_paused")


def _new_header(document: dict[str, Any]) -> None:
    not_found = document["components"]["responses"]["NotFound"]
    not_found["headers"] = {"Cache-Control": {"schema": {"type": "string"}}}


def _new_field_code(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    error["properties"]["fields"]["additionalProperties"]["enum"].append("bad_luck")


def _new_http_layer_code(document: dict[str, Any]) -> None:
    _new_code(document)
    document["info"]["description"] += " Too early: 425 `teapot`."


@pytest.mark.parametrize(("change", "expected"), [
    (_healthz_500, "GET /HEALTHZ 500: in openapi.json only"),
    (_new_path, "GET /V1/EXTRA: in openapi.json only"),
    (_new_code, "error code teapot: in openapi.json's list only"),
    (_new_answered_code, "POST /V1/REGISTRATIONS 503: codes"),
    (_new_header, "GET /V1/REGISTRATIONS/{REGISTRATION_ID} 404: headers"),
    (_new_field_code, "field code bad_luck: in openapi.json only"),
    (_new_http_layer_code, "any path 425: in openapi.json only"),
])
def test_what_only_the_openapi_document_has_is_found(change: Any, expected: str) -> None:
    document = copy.deepcopy(DOCUMENT)
    change(document)
    found = disagreements(parse_doc(API_DOC), parse_spec(document))
    assert any(line.startswith(expected) for line in found), found
