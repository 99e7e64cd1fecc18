"""The drills' check that no refusal claimed "nothing stored" for a stored registration."""

from __future__ import annotations

from loadtest.drills.traffic import Applicant, Try
from loadtest.drills.truth import refused_yet_stored, unknown_outcomes
from loadtest.registrants import RegistrantFactory
from queueing.ids import uuid7

T = 1_800_000_000_000  # a Unix time in ms


def _applicant(made_ms: int, *tries: Try) -> Applicant:
    return Applicant(RegistrantFactory(seed=1).make(), "key", uuid7(made_ms), tries=list(tries))


def test_a_refusal_by_the_try_that_stored_the_registration_is_counted() -> None:
    # The first try was answered 503 queue_unavailable, yet its id came back in the replay.
    lied = _applicant(T + 5, Try(T, 503, "queue_unavailable"), Try(T + 2000, 202))
    limited = _applicant(T + 5, Try(T, 429, "admission_limited"), Try(T + 2000, 202))
    assert refused_yet_stored([lied, limited]) == 2


def test_true_refusals_and_unknown_outcomes_are_not() -> None:
    # Refused, then stored by the retry: the refusal was true.
    refused_then_stored = _applicant(T + 2003, Try(T, 503, "queue_unavailable"),
                                     Try(T + 2000, 202))
    # "Outcome unknown" claims nothing, nor does a broken connection.
    unknown = _applicant(T + 5, Try(T, 503, "outcome_unknown"), Try(T + 2000, 202))
    broken = _applicant(T + 5, Try(T, 0), Try(T + 300, 202))
    never_stored = Applicant(RegistrantFactory(seed=2).make(), "other",
                             tries=[Try(T, 503, "backlog_full")])
    applicants = [refused_then_stored, unknown, broken, never_stored]
    assert refused_yet_stored(applicants) == 0
    assert unknown_outcomes(applicants) == 1
