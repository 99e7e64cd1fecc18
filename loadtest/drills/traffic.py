"""The surge a drill sends: paced registrations, retried as the web form would.

Each applicant is posted with its own Idempotency-Key; a 429 or 503 is tried
again after its Retry-After (capped, with jitter), a broken connection after
a short pause, with the same key, so a retry can never create a second
registration. Every answer is recorded, so the verdict can tell a 202 that
was lost from one that was never given.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import aiohttp
import orjson

from loadtest.registrants import Registrant, RegistrantFactory

REGISTRATIONS_PATH: Final = "/v1/registrations"
# A reply slower than this is a hang: the door promises an answer within its
# Redis timeout (under a second), so this leaves room for a loaded machine.
HANG_SECONDS: Final = 5.0
RETRY_AFTER_CAP_SECONDS: Final = 2.0
RECONNECT_PAUSE_SECONDS: Final = 0.3
# An applicant keeps trying this long (a door restarting takes seconds).
PATIENCE_SECONDS: Final = 30.0


@dataclass(frozen=True)
class Try:
    """One try of an applicant: when it was sent (Unix ms), the status (0: no
    answer) and, for a refusal, the error code."""

    sent_ms: int
    status: int
    code: str = ""


@dataclass
class Applicant:
    """One applicant of the surge and what the door answered it."""

    person: Registrant
    key: str
    registration_id: uuid.UUID | None = None
    statuses: list[int] = field(default_factory=list)
    tries: list[Try] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Applicant({self.key}, statuses={self.statuses})"


@dataclass
class SurgeRecord:
    """What the door answered, over every try of every applicant."""

    applicants: list[Applicant]
    statuses: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0
    hangs: int = 0
    # 429 and 503 answers without a Retry-After header (the contract requires one).
    without_retry_after: int = 0
    # Applicants who got no 202 within their patience.
    gave_up: int = 0
    seconds: float = 0.0

    @property
    def accepted(self) -> list[Applicant]:
        """Applicants the door answered 202."""
        return [a for a in self.applicants if a.registration_id is not None]

    @property
    def unexpected(self) -> int:
        """Answers outside the contract's 202, 429 and 503 (a 500, most of all)."""
        return sum(n for status, n in self.statuses.items() if status not in (202, 429, 503))


class Surge:
    """Send `count` applicants at `rate` a second to the door at `base_url`."""

    def __init__(self, base_url: str, count: int, rate: float,
                 patience_seconds: float = PATIENCE_SECONDS, seed: int | None = None) -> None:
        factory = RegistrantFactory(seed)
        self.base_url = base_url
        self.rate = rate
        self.patience_seconds = patience_seconds
        self.record = SurgeRecord([Applicant(factory.make(), str(uuid.uuid4()))
                                   for _ in range(count)])
        self.sent = 0
        self._rng = random.Random(seed)
        self._waiters: list[tuple[int, asyncio.Event]] = []

    async def sent_at_least(self, count: int) -> None:
        """Return once `count` applicants have been sent."""
        if self.sent >= count:
            return
        reached = asyncio.Event()
        self._waiters.append((count, reached))
        await reached.wait()

    def _count_sent(self) -> None:
        self.sent += 1
        for count, reached in self._waiters:
            if self.sent >= count:
                reached.set()

    async def run(self) -> SurgeRecord:
        """Send every applicant on schedule (open loop) and wait for the last answer."""
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=HANG_SECONDS)
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            tasks = []
            for index, applicant in enumerate(self.record.applicants):
                delay = started + index / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._count_sent()
                tasks.append(asyncio.create_task(self._register(session, applicant)))
            await asyncio.gather(*tasks)
        self.record.seconds = time.monotonic() - started
        return self.record

    async def _register(self, session: aiohttp.ClientSession, applicant: Applicant) -> None:
        body = orjson.dumps(applicant.person.body())
        headers = {"Content-Type": "application/json", "Idempotency-Key": applicant.key}
        give_up_at = time.monotonic() + self.patience_seconds
        while time.monotonic() < give_up_at:
            # The door's clock is this machine's: a registration id (UUIDv7)
            # made by this try carries a time at or after this.
            sent_ms = time.time_ns() // 1_000_000
            try:
                async with session.post(self.base_url + REGISTRATIONS_PATH, data=body,
                                        headers=headers) as reply:
                    status = reply.status
                    payload = await reply.read()
                    retry_after = reply.headers.get("Retry-After")
            except TimeoutError:
                self.record.hangs += 1
                applicant.tries.append(Try(sent_ms, 0))
                continue
            except aiohttp.ClientError:
                self.record.connection_errors += 1
                applicant.tries.append(Try(sent_ms, 0))
                await asyncio.sleep(RECONNECT_PAUSE_SECONDS)
                continue
            applicant.statuses.append(status)
            applicant.tries.append(Try(sent_ms, status, "" if status == 202 else _code(payload)))
            self.record.statuses[status] += 1
            if status == 202:
                applicant.registration_id = uuid.UUID(orjson.loads(payload)["registration_id"])
                return
            if status not in (429, 503):
                break
            if retry_after is None:
                self.record.without_retry_after += 1
            wait = min(float(retry_after or 1), RETRY_AFTER_CAP_SECONDS)
            await asyncio.sleep(wait * self._rng.uniform(0.5, 1.0))
        self.record.gave_up += 1


def _code(payload: bytes) -> str:
    """The contract's error code of a refusal ("" when the body is not the contract's)."""
    try:
        code = orjson.loads(payload)["error"]["code"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ""
    return code if isinstance(code, str) else ""
