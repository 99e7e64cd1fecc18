"""Schemathesis against a real door process: every public operation, valid and invalid input.

The door is `gelombang serve` on the run's Redis and PostgreSQL. Every response must be
no 5xx other than the documented 503s, and must conform to /openapi.json (status code,
content type, headers, body schema). Examples are bounded so the run stays short; raise
GELOMBANG_FUZZ_EXAMPLES for a longer hunt.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, Final

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation

from config.settings import Settings
from tests.support import DoorProcesses, door_processes

pytestmark = pytest.mark.slow

DOCUMENT: Final[dict[str, Any]] = json.loads(
    resources.files("intake").joinpath("openapi.json").read_text(encoding="utf-8")
)
SCHEMA: Final = schemathesis.openapi.from_dict(DOCUMENT)



def _operations() -> list[APIOperation[Any, Any, Any, Any]]:
    operations = []
    for result in SCHEMA.get_all_operations():
        # A part of the document schemathesis cannot read fails the module at import.
        assert isinstance(result, Ok), result.err()
        operations.append(result.ok())
    return sorted(operations, key=lambda op: op.label)


OPERATIONS: Final = _operations()
# The operations whose input the schema constrains (a body, a header, a query): only
# these have invalid input to generate.
NEGATIVE_LABELS: Final = ["POST /v1/registrations", "GET /v1/verify-email"]
EXAMPLES: Final = int(os.environ.get("GELOMBANG_FUZZ_EXAMPLES", "40"))
CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Cases sent per operation and mode, for the run's figures (read by the last test).
CASES_RUN: Counter[str] = Counter()


@pytest.fixture(scope="module")
def door(
    test_settings: Settings, migrated_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DoorProcesses]:
    """One real door process for every case of this module."""
    with door_processes(test_settings, tmp_path_factory.mktemp("fuzz"), processes=1) as doors:
        yield doors


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """One keep-alive session, as a browser would reuse its connection."""
    with requests.Session() as session:
        yield session


def _fuzz(
    door: DoorProcesses, http: requests.Session, label: str, mode: GenerationMode
) -> None:
    operation = next(op for op in OPERATIONS if op.label == label)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case[Any]) -> None:
        CASES_RUN[f"{label} {mode.value}"] += 1
        response = case.call(base_url=door.url, session=http, timeout=10)
        case.validate_response(response, checks=CHECKS)
        if mode is GenerationMode.NEGATIVE:
            # schemathesis's own negative_data_rejection does not count 413 as a
            # rejection; the contract checks the body's size before its fields.
            assert response.status_code >= 400, f"{label}: input outside the schema accepted"

    run()


@pytest.mark.parametrize("label", [op.label for op in OPERATIONS])
def test_valid_input_gets_documented_answers_only(
    door: DoorProcesses, http: requests.Session, label: str
) -> None:
    _fuzz(door, http, label, GenerationMode.POSITIVE)


@pytest.mark.parametrize("label", NEGATIVE_LABELS)
def test_invalid_input_is_rejected_with_documented_answers_only(
    door: DoorProcesses, http: requests.Session, label: str
) -> None:
    _fuzz(door, http, label, GenerationMode.NEGATIVE)


def test_linked_operations_in_sequence_conform(
    door: DoorProcesses, http: requests.Session
) -> None:
    # Stateful: a POST's 202 links (OpenAPI `links`) to the GET of its registration, so
    # schemathesis chains registrations and status reads with ids the door handed out.
    class Workflow(SCHEMA.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"base_url": door.url, "session": http, "timeout": 10}

        def validate_response(self, response: Any, case: Case[Any],
                              additional_checks: Any = None, **kwargs: Any) -> None:
            CASES_RUN[f"{case.operation.label} stateful"] += 1
            case.validate_response(response, checks=CHECKS)

    Workflow.run(settings=settings(max_examples=max(1, EXAMPLES // 4), deadline=None,
                                   database=None, stateful_step_count=6,
                                   suppress_health_check=list(HealthCheck)))
    assert CASES_RUN["GET /v1/registrations/{registration_id} stateful"]


@settings(max_examples=1, deadline=None, database=None)
@given(st.just(None))
def test_the_fuzzing_covered_every_operation(_: None) -> None:
    # Run after the parametrised tests (file order): a schema that loaded no
    # operation, or a mode that generated nothing, would otherwise pass silently.
    if not CASES_RUN:
        pytest.skip("run together with the fuzzing tests")
    assert {key.rsplit(" ", 1)[0] for key in CASES_RUN} == {op.label for op in OPERATIONS}
    assert all(CASES_RUN[f"{label} negative"] for label in NEGATIVE_LABELS)
    assert len(OPERATIONS) == len(DOCUMENT["paths"])


def test_the_door_log_names_no_unhandled_error(door: DoorProcesses) -> None:
    assert "unhandled" not in Path(door.log_path).read_text(errors="replace")
