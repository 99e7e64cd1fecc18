"""The surge workload: every submission is what it claims to be, checked by the door's own rules."""

from __future__ import annotations

import datetime
from collections import Counter
from typing import Any

import orjson
import pytest

from intake.validation import normalise_email, normalise_phone, validate_registration
from loadtest.generator import (
    DUPLICATE_EMAIL,
    DUPLICATE_NIK,
    MALFORMED_JSON,
    VALID,
    Mix,
    Submission,
    SurgeGenerator,
)

TODAY = datetime.date(2026, 4, 11)


def _submissions(count: int, mix: Mix | None = None, seed: int = 7) -> list[Submission]:
    generator = SurgeGenerator(mix or Mix(), seed=seed, today=TODAY)
    return [generator.next() for _ in range(count)]


def _verdict(submission: Submission) -> tuple[int, dict[str, str] | None]:
    """What the door's validator makes of this body: (status, fields)."""
    try:
        body: Any = orjson.loads(submission.body)
    except orjson.JSONDecodeError:
        return 400, None
    outcome = validate_registration(body, TODAY)
    return (422, outcome) if isinstance(outcome, dict) else (202, None)


def test_every_submission_gets_the_answer_it_expects() -> None:
    mix = Mix(duplicate_share=0.2, invalid_share=0.4, double_submit_share=0.1)
    wrong = [s.kind for s in _submissions(6_000, mix)
             if _verdict(s) != (s.expected_status, s.expected_fields)]
    assert wrong == []


def test_every_invalid_kind_is_produced() -> None:
    kinds = {s.kind for s in _submissions(20_000, Mix(invalid_share=0.5))}
    assert set(SurgeGenerator.INVALID_KINDS) <= kinds
    assert MALFORMED_JSON in kinds and len(SurgeGenerator.INVALID_KINDS) > 20


def test_shares_follow_the_mix() -> None:
    mix = Mix(duplicate_share=0.1, invalid_share=0.05, double_submit_share=0.03)
    submissions = _submissions(20_000, mix)
    kinds = Counter(s.kind for s in submissions)
    duplicates = kinds[DUPLICATE_NIK] + kinds[DUPLICATE_EMAIL]
    invalid = sum(count for kind, count in kinds.items() if kind.startswith("invalid:")) \
        + kinds[MALFORMED_JSON]
    assert duplicates / 20_000 == pytest.approx(0.1, abs=0.01)
    assert invalid / 20_000 == pytest.approx(0.05, abs=0.01)
    assert sum(s.double_submit for s in submissions) / 20_000 == pytest.approx(0.03, abs=0.006)
    assert all(s.kind == VALID for s in submissions if s.double_submit)


def test_duplicates_repeat_an_earlier_nik_or_lower_cased_email() -> None:
    submissions = _submissions(5_000, Mix(duplicate_share=0.3, invalid_share=0.0))
    seen_niks: set[str] = set()
    seen_emails: set[str] = set()
    for submission in submissions:
        body = orjson.loads(submission.body)
        email = normalise_email(body["email"])
        if submission.kind == DUPLICATE_NIK:
            assert body["nik"] in seen_niks and email not in seen_emails
        elif submission.kind == DUPLICATE_EMAIL:
            assert email in seen_emails and body["nik"] not in seen_niks
        else:
            assert body["nik"] not in seen_niks and email not in seen_emails
            seen_niks.add(body["nik"])
            seen_emails.add(email)


def test_valid_people_are_unique_and_phones_come_in_every_form() -> None:
    valid = [orjson.loads(s.body) for s in _submissions(20_000, Mix(0.0, 0.0, 0.0))]
    phones = [body["phone"] for body in valid]
    assert len({normalise_phone(phone) for phone in phones}) == len(valid)
    assert {phone[:3] for phone in phones} >= {"+62", "628"} and any(p[0] == "0" for p in phones)
    assert any("-" in phone for phone in phones) and any(" " in phone for phone in phones)
    names = "".join(body["full_name"] for body in valid)
    assert {"'", ".", "-"} <= set(names) and any(ord(char) > 127 for char in names)


def test_runs_with_the_same_seed_match_and_others_do_not_collide() -> None:
    assert [s.body for s in _submissions(500)] == [s.body for s in _submissions(500)]
    first = {orjson.loads(s.body)["nik"] for s in _submissions(2_000, Mix(0.0, 0.0, 0.0))}
    other = {orjson.loads(s.body)["nik"] for s in _submissions(2_000, Mix(0.0, 0.0, 0.0), 8)}
    assert len(first & other) < 5  # NIKs are drawn from a large space, not a fixed list
    assert len({s.idempotency_key for s in _submissions(2_000)}) == 2_000


def test_a_mix_with_shares_over_one_is_refused() -> None:
    with pytest.raises(ValueError):
        Mix(duplicate_share=0.6, invalid_share=0.5)
    with pytest.raises(ValueError):
        Mix(duplicate_share=0.5, invalid_share=0.3, double_submit_share=0.3)


def test_repr_shows_no_personal_data() -> None:
    submission = _submissions(1)[0]
    assert repr(submission) == f"Submission(kind={submission.kind!r})"
