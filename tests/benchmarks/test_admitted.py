"""The wave's count of failures answered for admitted registrations (must be 0)."""

from __future__ import annotations

import orjson

from benchmarks.admitted import PassAnswers


def _refusal(code: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": "m"}})


def test_only_a_refusal_claiming_nothing_stored_for_an_admitted_key_counts() -> None:
    answers = PassAnswers(7)
    answers.record(0, 202, b'{"registration_id": "x"}')
    answers.record(1, 503, _refusal("queue_unavailable"))  # admitted: a lie
    answers.record(2, 429, _refusal("admission_limited"))  # admitted: a lie
    answers.record(3, 503, _refusal("outcome_unknown"))  # admitted: true ("may be")
    answers.record(4, 503, _refusal("backlog_full"))  # not admitted: true
    # 5: no answer (a broken connection), admitted: claims nothing
    answers.record(6, 503, b"not json")  # admitted, a 503 off contract: counted
    admitted = [True, True, True, True, False, True, True]
    assert answers.refused_yet_admitted(admitted) == 3
    assert answers.unknown == 1
