"""Test support: door processes started like production, a small load generator,
and scanners that prove no personal data is stored or logged in the clear."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import aiohttp
import orjson

from config.settings import Settings
from gelombang.devstate import render_toml
from gelombang.processes import free_port
from intake.validation import validate_registration
from loadtest.registrants import Registrant, RegistrantFactory
from queueing.envelope import STREAM_FIELD, Envelope, PersonalData
from queueing.intake_admission import Sealing
from queueing.keys import partitions
from queueing.redis_client import RedisClient

REPO_ROOT = Path(__file__).resolve().parents[1]
# Full-width digits: another script's digits, which str.isdigit() also accepts.
FULL_WIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))


@dataclass
class DoorProcesses:
    """A `gelombang serve` supervisor and its door processes."""

    process: subprocess.Popen[bytes]
    url: str
    admin_url: str
    log_path: Path

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM the supervisor and wait for it to exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log_text(self) -> str:
        """Everything the processes wrote to stdout and stderr."""
        return self.log_path.read_text(errors="replace")


def write_config(settings: Settings, path: Path, public_port: int, admin_port: int) -> None:
    """A config file equal to `settings`, with fixed ports (shared via SO_REUSEPORT)."""
    sections = settings.model_dump(mode="json")
    sections["public"]["port"] = public_port
    sections["public"]["host"] = "127.0.0.1"
    sections["admin"]["port"] = admin_port
    path.write_text(render_toml(sections))


@contextlib.contextmanager
def door_processes(settings: Settings, folder: Path, processes: int = 2) -> Iterator[DoorProcesses]:
    """Run `gelombang serve --processes N` until the block ends (SIGTERM, then kill)."""
    public_port, admin_port = free_port(), free_port()
    config = folder / "door.toml"
    write_config(settings, config, public_port, admin_port)
    log_path = folder / "door.log"
    env = {**os.environ, "GELOMBANG_CONFIG": str(config), "PYTHONUNBUFFERED": "1",
           "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gelombang", "serve", "--processes", str(processes)],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    doors = DoorProcesses(process, f"http://127.0.0.1:{public_port}",
                          f"http://127.0.0.1:{admin_port}", log_path)
    try:
        _wait_healthy(doors, processes)
        yield doors
    finally:
        try:
            doors.terminate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(doors: DoorProcesses, processes: int, timeout: float = 20.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if doors.process.poll() is not None:
            raise RuntimeError(f"door exited early:\n{doors.log_text()[-2000:]}")
        started = doors.log_text().count("listening on")
        if started >= processes:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(doors.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
        time.sleep(0.1)
    raise RuntimeError(f"door not healthy in time:\n{doors.log_text()[-2000:]}")


@dataclass
class LoadResult:
    """What a load run sent and what came back."""

    sent: list[Registrant] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    accepted_ids: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    slow: list[tuple[int, float]] = field(default_factory=list)
    connection_errors: int = 0
    retry_after: list[int] = field(default_factory=list)


async def run_load(
    url: str,
    *,
    concurrency: int,
    duration: float,
    factory: RegistrantFactory | None = None,
    stop: asyncio.Event | None = None,
    fresh_connections: bool = False,
) -> LoadResult:
    """Closed-loop POSTs from `concurrency` clients for `duration` seconds (bounded)."""
    factory = factory or RegistrantFactory()
    result = LoadResult()
    deadline = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=fresh_connections)
    timeout = aiohttp.ClientTimeout(total=10)

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            person = factory.make()
            result.sent.append(person)
            started = time.monotonic()
            try:
                async with session.post(url + "/v1/registrations",
                                        data=orjson.dumps(person.body()),
                                        headers={"Content-Type": "application/json"}) as response:
                    body = orjson.loads(await response.read())
                    status = response.status
                    if "Retry-After" in response.headers:
                        result.retry_after.append(int(response.headers["Retry-After"]))
            except (aiohttp.ClientError, TimeoutError):
                result.connection_errors += 1
                await asyncio.sleep(0.01)
                continue
            elapsed = time.monotonic() - started
            result.latencies.append(elapsed)
            result.statuses[status] += 1
            if status == 202:
                result.accepted_ids.append(body["registration_id"])
            else:
                result.codes[body["error"]["code"]] += 1
                if elapsed > 1.0:
                    result.slow.append((status, elapsed))
                if status in (429, 503):
                    await asyncio.sleep(0.005)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return result


StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]


async def stream_range(redis: RedisClient, stream: str | bytes) -> StreamEntries:
    """Every entry of a stream, typed (redis-py's own annotation is loose)."""
    return cast(StreamEntries, await redis.xrange(stream))


async def queued_envelopes(redis: RedisClient, count: int) -> list[Envelope]:
    """The envelope of every entry in every partition stream."""
    return [
        Envelope.decode(fields[STREAM_FIELD])
        for part in partitions(count)
        for _, fields in await stream_range(redis, part.stream)
    ]


async def queued_ids(redis: RedisClient, count: int) -> list[str]:
    """The registration id of every entry in every partition stream."""
    return [str(envelope.registration_uuid) for envelope in await queued_envelopes(redis, count)]


def personal_values_by_kind(people: Sequence[Registrant]) -> list[tuple[str, bytes]]:
    """Every submitted personal value with its kind, as it could appear in storage or logs.

    The kind names the field and the value's length only, so a failure can say
    what matched (a short name can match by chance in a large dump) without
    saying the value.
    """
    values: list[tuple[str, bytes]] = []
    for person in people:
        name = person.full_name.encode()
        values += [("nik", person.nik.encode()), ("email", person.email.encode()),
                   ("email (lower-cased)", person.email.lower().encode()),
                   (f"name ({len(name)} bytes)", name),
                   ("phone (national number)", national_number(person.phone).encode())]
    return values


def national_number(phone: str) -> str:
    """The mobile number without its prefix (0, 62 or +62): in every form it is sent in.

    Not its last 9 digits: every stream entry id and lease epoch is a 13-digit
    millisecond time, and among a dump's thousands of them some 9-digit run
    matched a phone's tail about once in a hundred runs. The whole national
    number (10 to 12 digits, starting with 8) does not match by chance."""
    for prefix in ("+62", "62", "0"):
        if phone.startswith(prefix):
            return phone[len(prefix):]
    return phone


# Shorter values are not searched for: a given 3-byte value occurs by chance
# about once in 16 million random bytes, and the haystacks are megabytes of
# ciphertext and hashes (a 3-byte name was "found" 5 times so, in Redis, its
# append-only file and PostgreSQL at once: one sealed blob). Only names are that
# short (3 % of the generator's have 3 or 4 bytes); their owners' NIK, email and
# phone are still searched for.
MIN_SEARCHED_BYTES = 5


def leaked_kinds(haystack: bytes, people: Sequence[Registrant], *,
                 as_hex: bool = False) -> dict[str, int]:
    """Submitted personal values found in the clear, counted by kind (never the values).

    as_hex looks for the values' hex encoding instead, as PostgreSQL prints bytea.
    """
    found: Counter[str] = Counter()
    for kind, value in personal_values_by_kind(people):
        if len(value) < MIN_SEARCHED_BYTES:
            continue
        if (value.hex().encode() if as_hex else value) in haystack:
            found[("hex of " if as_hex else "") + kind] += 1
    return dict(found)


def leaked(haystack: bytes, people: Sequence[Registrant], *, as_hex: bool = False) -> int:
    """How many submitted personal values occur in the clear (the count, never the values)."""
    return sum(leaked_kinds(haystack, people, as_hex=as_hex).values())


def seal_people(settings: Settings, people: Sequence[Registrant],
                start_ms: int | None = None) -> list[Envelope]:
    """Envelopes as the door makes them (validated, sealed, hashed), ids in list order.

    Without address keys: version 1 envelopes, as an older door made them.
    """
    sealing = Sealing.of(settings.keys)
    first_ms = start_ms if start_ms is not None else time.time_ns() // 1_000_000
    envelopes = []
    for offset, person in enumerate(people):
        checked = validate_registration(person.body(), datetime.date.today())
        assert isinstance(checked, PersonalData), "made-up registrants are valid"
        # One millisecond apart, so id order is list order.
        envelopes.append(sealing.seal(checked, first_ms + offset))
    return envelopes


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 20.0,
                     what: str = "condition") -> None:
    """Poll until the check holds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {within} s")
        await asyncio.sleep(0.05)
