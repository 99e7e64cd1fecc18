"""The ministry's (Dukcapil-style) NIK verification API, over HTTP.

`POST <nik.base_url>/api/v1/nik/verify` with HTTP Basic credentials and
`{"nik", "full_name", "birth_date"}`; the answer's `result` is `match`,
`name_mismatch`, `birth_date_mismatch` or `not_found`. The bundled simulator
(`gelombang nik-sim`) speaks the same API.

A call ends in one of three ways: an outcome (the ministry answered about
the NIK); `NikUnavailable` (5xx, 429, timeout, connection refused: try again
later, honouring `retry_after`); or `NikRejected` (the API refused the
request itself, e.g. bad credentials: retrying will not help).
"""

from __future__ import annotations

import base64
import datetime
import math
from dataclasses import dataclass
from typing import Final

import orjson

from config.settings import NikSettings
from workers.verification.http import HttpClient, HttpError
from workers.verification.store import NikOutcome

VERIFY_PATH: Final = "/api/v1/nik/verify"
# A Retry-After beyond this (or inf, or 1e9) is taken as this: the breaker and
# the back-off go on probing, so a wrong header never stops the checks for good.
RETRY_AFTER_MAX_SECONDS: Final = 300.0
_OUTCOMES: Final[dict[str, NikOutcome]] = {
    "match": "verified",
    "name_mismatch": "mismatch",
    "birth_date_mismatch": "mismatch",
    "not_found": "not_found",
}


@dataclass(frozen=True, slots=True)
class NikUnavailable(Exception):
    """The API could not answer now; `busy` when it said so itself (429)."""

    reason: str
    retry_after: float | None = None
    busy: bool = False

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class NikRejected(Exception):
    """The API refused the request as such (4xx other than 429)."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as delay-seconds (the form the ministry's API uses), at most
    RETRY_AFTER_MAX_SECONDS; None when absent or not a finite number."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_MAX_SECONDS)


class NikClient:
    """Keep-alive connections to the API, `nik.concurrency` at most; the caller paces
    and retries."""

    def __init__(self, settings: NikSettings) -> None:
        self._http = HttpClient(settings.base_url, settings.concurrency,
                                settings.timeout_seconds)
        credentials = base64.b64encode(
            f"{settings.username}:{settings.password}".encode()).decode()
        self._head = self._http.head(VERIFY_PATH, {
            "Authorization": f"Basic {credentials}", "Content-Type": "application/json",
            "Accept": "application/json"})

    async def check(self, nik: str, full_name: str, birth_date: datetime.date) -> NikOutcome:
        """The ministry's answer for this person; raises NikUnavailable or NikRejected."""
        body = orjson.dumps({"nik": nik, "full_name": full_name,
                             "birth_date": birth_date.isoformat()})
        try:
            answer = await self._http.post(self._head, body)
        except HttpError as exc:
            raise NikUnavailable(str(exc)) from None
        if answer.status == 200:
            try:
                payload = orjson.loads(answer.body)
            except orjson.JSONDecodeError:
                raise NikUnavailable("malformed answer") from None
            result = payload.get("result") if isinstance(payload, dict) else None
            if result not in _OUTCOMES:
                raise NikRejected("unknown result in the answer")
            return _OUTCOMES[result]
        retry_after = retry_after_seconds(answer.headers.get("retry-after"))
        if answer.status == 429:
            raise NikUnavailable("429", retry_after, busy=True)
        if answer.status >= 500:
            raise NikUnavailable(str(answer.status), retry_after)
        # 3xx too: a redirect is never followed (personal data stays with this host).
        raise NikRejected(str(answer.status))

    async def close(self) -> None:
        """Close the connections."""
        await self._http.close()
