"""Whether the door's refusals were true: none may claim "nothing stored" for a stored one.

A 429, or a 503 other than `outcome_unknown`, tells the applicant that
nothing was stored. Which try stored an applicant's registration is read
from the system's output, not the door's word: the registration id the
applicant finally got (the original one, when a retry with the same key was
a replay) is a UUIDv7 holding the time the door made it, on the clock the
surge reads too. The try that made it is the last one sent at or before
that time (the next one goes out only after that try's answer and a pause).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from loadtest.drills.traffic import Applicant, Try
from queueing.ids import uuid7_unix_ms

# The one refusal that does not claim that nothing was stored.
UNKNOWN_OUTCOME: Final = "outcome_unknown"


def claims_nothing_stored(attempt: Try) -> bool:
    """Whether an answer told the applicant that nothing was stored."""
    return attempt.status == 429 or (attempt.status == 503 and attempt.code != UNKNOWN_OUTCOME)


def refused_yet_stored(applicants: Iterable[Applicant]) -> int:
    """Applicants told "nothing stored" by the very try that stored their registration."""
    count = 0
    for applicant in applicants:
        if applicant.registration_id is None:
            continue
        made_ms = uuid7_unix_ms(applicant.registration_id)
        before = [attempt for attempt in applicant.tries if attempt.sent_ms <= made_ms]
        if before and claims_nothing_stored(before[-1]):
            count += 1
    return count


def unknown_outcomes(applicants: Iterable[Applicant]) -> int:
    """503 outcome_unknown answers, over every try."""
    return sum(attempt.code == UNKNOWN_OUTCOME
               for applicant in applicants for attempt in applicant.tries)
