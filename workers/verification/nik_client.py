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

import datetime
from dataclasses import dataclass
from typing import Final

import aiohttp

from config.settings import NikSettings
from workers.verification.store import NikOutcome

VERIFY_PATH: Final = "/api/v1/nik/verify"
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
    """Retry-After as delay-seconds (the form the ministry's API uses), else None."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class NikClient:
    """One HTTP session to the API; the caller paces and retries."""

    def __init__(self, settings: NikSettings) -> None:
        self._url = settings.base_url.rstrip("/") + VERIFY_PATH
        self._headers = {"Authorization": aiohttp.encode_basic_auth(settings.username,
                                                                    settings.password)}
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._limit = settings.concurrency

    async def check(self, nik: str, full_name: str, birth_date: datetime.date) -> NikOutcome:
        """The ministry's answer for this person; raises NikUnavailable or NikRejected."""
        body = {"nik": nik, "full_name": full_name, "birth_date": birth_date.isoformat()}
        try:
            async with self._get_session().post(self._url, json=body, headers=self._headers,
                                                timeout=self._timeout) as reply:
                if reply.status == 200:
                    payload = await reply.json(content_type=None)
                    result = payload.get("result") if isinstance(payload, dict) else None
                    if result not in _OUTCOMES:
                        raise NikRejected("unknown result in the answer")
                    return _OUTCOMES[result]
                retry_after = retry_after_seconds(reply.headers.get("Retry-After"))
                if reply.status == 429:
                    raise NikUnavailable("429", retry_after, busy=True)
                if reply.status >= 500:
                    raise NikUnavailable(str(reply.status), retry_after)
                raise NikRejected(str(reply.status))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise NikUnavailable(type(exc).__name__) from None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Keep-alive connections, as many as calls may be in flight.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                raise_for_status=False)
        return self._session

    async def close(self) -> None:
        """Close the session's connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
