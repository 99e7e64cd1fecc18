"""Which applicants of a benchmark the door admitted, and whether its answers said so truly.

An applicant's Idempotency-Key has a record in Redis once the door admitted
it (the record is the system's output, not the door's word). Set against
the answer each request got, that tells a refusal that was false: a 429, or
a 503 other than `outcome_unknown`, says that nothing was stored; for a
request whose key was admitted by that very request, that is a lie (the
issue's "failure answered for an admitted registration"; must be 0).
"""

from __future__ import annotations

import time
from typing import Final

import orjson
import redis

from queueing.intake_admission import idempotency_record

# The one refusal that does not claim that nothing was stored.
UNKNOWN_OUTCOME: Final = "outcome_unknown"


def admitted_mask(client: redis.Redis, keys: list[str], partition_count: int,
                  ttl: int) -> list[bool]:
    """Which Idempotency-Keys the door admitted: their records exist (kept a day)."""
    found: list[bool] = []
    now = time.time()
    for start in range(0, len(keys), 2500):
        with client.pipeline(transaction=False) as pipe:
            for key in keys[start:start + 2500]:
                record = idempotency_record(key, partition_count, ttl, now)
                pipe.hexists(record.current, record.field)
                pipe.hexists(record.previous, record.field)
            answers = pipe.execute()
            found += [bool(a or b) for a, b in zip(answers[::2], answers[1::2], strict=True)]
    return found


class PassAnswers:
    """The answer each request of one pass got: its status and, for a refusal, its code."""

    def __init__(self, count: int) -> None:
        self.statuses = [0] * count  # 0: no answer (a broken connection, unfinished)
        self.codes = [""] * count

    def record(self, index: int, status: int, body: bytes) -> None:
        """One answer (the open-loop generator's on_answer)."""
        self.statuses[index] = status
        if status != 202:
            try:
                self.codes[index] = str(orjson.loads(body)["error"]["code"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.codes[index] = ""

    def refused_yet_admitted(self, admitted: list[bool]) -> int:
        """Requests told "nothing stored" whose key the pass admitted (each key is sent
        once a pass, and only while not admitted, so that request admitted it)."""
        return sum(was_admitted and (status == 429 or (
            status == 503 and code != UNKNOWN_OUTCOME))
            for was_admitted, status, code in zip(admitted, self.statuses, self.codes,
                                                  strict=True))

    @property
    def unknown(self) -> int:
        """503 outcome_unknown answers."""
        return self.codes.count(UNKNOWN_OUTCOME)
