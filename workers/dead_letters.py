"""Dead letters: reading, replaying and dropping them (`gelombang dead-letters`).

Both kinds live on their partition's dead stream (`gelombang:{pN}:dead`):

* an intake entry the drain could not store (workers/drain/worker.py): fields
  `entry`, `reason`, `deliveries` and `m`, the sealed envelope as queued; the
  drain also keeps a row of it in PostgreSQL's `dead_letters` (the record);
* a verification job given up on (workers/jobs.py): fields `entry`, `stream`
  (the verification stream it came from), `reason` and `r`, the 16-byte
  registration id. An entry with a `stream` field is a job.

A replay adds the letter back to the stream it came from and deletes it from
the dead stream in one script call (queueing/lua/replay.lua), so it happens
once or not at all; an intake letter's PostgreSQL row goes after that. A
payload is never decoded or opened here: it goes back as it was queued.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg

from database.queries import load
from queueing.envelope import STREAM_FIELD
from queueing.keys import Partition
from queueing.redis_client import REDIS_UNAVAILABLE, RedisClient
from queueing.scripts import PipelinedScript, ScriptCall, script_source
from workers.drain.handoff import JOB_FIELD, KINDS

QUERIES: Final = load("dead_letters.sql")
# Every kind a dead letter can have; "unknown": a job whose `stream` is not one
# of its partition's verification streams (listed and droppable, never replayed).
LETTER_KINDS: Final = ("intake", *KINDS)
# The dead entries' fields that hold what a replay adds back (see the docstring).
PAYLOAD_FIELD: Final = b"m"
REGISTRATION_FIELD: Final = b"r"
# Dead entries read per call, and replayed or dropped per round trip.
PAGE_SIZE: Final = 200
PG_UNAVAILABLE: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class DeadLetterError(Exception):
    """Root of what a dead-letter command reports to its operator."""


class ServiceFailed(DeadLetterError):
    """Redis or PostgreSQL could not be reached, or failed mid-way."""

    def __init__(self, service: str, cause: BaseException) -> None:
        detail = " ".join(str(cause).split())[:200]  # one line
        super().__init__(f"{service} failed ({type(cause).__name__}"
                         f"{': ' + detail if detail else ''})")
        self.service = service


class UnknownIds(DeadLetterError):
    """Some `--id` names no dead letter of the selected partitions."""


class AmbiguousId(DeadLetterError):
    """An `--id` is on several partitions' dead streams: a partition must be named."""


@contextlib.contextmanager
def failing_as(service: str) -> Iterator[None]:
    """Turn the service's connection and server errors into ServiceFailed."""
    errors = REDIS_UNAVAILABLE if service == "Redis" else PG_UNAVAILABLE
    try:
        yield
    except errors as exc:
        raise ServiceFailed(service, exc) from exc


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a dead stream, without its payload."""

    partition: int
    dead_id: str  # its id on the dead stream: when it was dead-lettered
    kind: str  # intake, email, nik or unknown
    entry_id: str  # its id on the stream it came from
    source: str  # the stream it came from, and goes back to
    reason: str
    deliveries: int | None  # intake entries only
    registration: str | None  # jobs only: the registration id (not personal data)
    replayable: bool  # it holds something to add back

    @property
    def dead_at(self) -> float:
        """Unix time it was dead-lettered (from its stream id)."""
        return int(self.dead_id.split("-", 1)[0]) / 1000

    def row(self, now: float) -> dict[str, Any]:
        """What an operator sees of it: never the payload."""
        return {"partition": self.partition, "id": self.dead_id, "kind": self.kind,
                "reason": self.reason, "deliveries": self.deliveries,
                "age_seconds": round(max(now - self.dead_at, 0.0), 1),
                "entry": self.entry_id, "stream": self.source,
                "registration": self.registration}


def parse_letter(partition: Partition, dead_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    """A dead entry as written by the drain or a job consumer."""
    text = {name: fields.get(name.encode(), b"").decode(errors="replace")
            for name in ("entry", "reason", "deliveries")}
    deliveries = int(text["deliveries"]) if text["deliveries"].isdigit() else None
    stream = fields.get(b"stream")
    if stream is None:
        return DeadLetter(partition.index, dead_id.decode(), "intake", text["entry"],
                          partition.stream, text["reason"], deliveries, None,
                          bool(fields.get(PAYLOAD_FIELD)))
    source = stream.decode(errors="replace")
    kind = next((k for k in KINDS if partition.verification(k) == source), "unknown")
    raw = fields.get(REGISTRATION_FIELD, b"")
    registration = str(uuid.UUID(bytes=raw)) if len(raw) == 16 else None
    return DeadLetter(partition.index, dead_id.decode(), kind, text["entry"], source,
                      text["reason"], deliveries, registration,
                      kind != "unknown" and registration is not None)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command acts on; empty fields select everything."""

    partition_count: int
    kinds: frozenset[str] = frozenset()
    partitions: tuple[int, ...] = ()
    ids: tuple[str, ...] = ()
    limit: int | None = None

    def selected_partitions(self) -> list[Partition]:
        """The partitions to read, in order."""
        chosen = sorted(set(self.partitions)) or range(self.partition_count)
        return [Partition(index) for index in chosen]

    def matches(self, letter: DeadLetter) -> bool:
        """Whether the letter is of a selected kind."""
        return not self.kinds or letter.kind in self.kinds

    def describe(self) -> dict[str, Any]:
        """The selection, for the audit trail."""
        return {"kinds": sorted(self.kinds) or "all",
                "partitions": sorted(set(self.partitions)) or "all",
                "ids": list(self.ids), "limit": self.limit}


@dataclass(slots=True)
class Outcome:
    """What a replay or a drop did so far."""

    selected: int = 0
    done: int = 0  # replayed, or dropped
    gone: int = 0  # no longer dead-lettered when its turn came (replayed or dropped meanwhile)
    skipped: int = 0  # replay only: nothing to add back (empty payload, unknown stream)
    rows_deleted: int = 0  # PostgreSQL records removed
    by_kind: Counter[str] = field(default_factory=Counter)  # done, per kind

    def report(self) -> dict[str, Any]:
        """The counts, for the audit trail."""
        return {"selected": self.selected, "done": self.done, "gone": self.gone,
                "skipped": self.skipped, "rows_deleted": self.rows_deleted,
                "by_kind": dict(sorted(self.by_kind.items()))}


async def _dead_range(redis: RedisClient, stream: str, start: str, end: str,
                      count: int | None = None) -> list[tuple[bytes, dict[bytes, bytes]]]:
    with failing_as("Redis"):
        reply: Any = await redis.xrange(stream, start, end, count=count)
    return list(reply)


async def check_ids(redis: RedisClient, selection: Selection) -> None:
    """Every `--id` names one dead letter of the selected partitions, else raise."""
    missing = []
    for dead_id in selection.ids:
        found = [p.index for p in selection.selected_partitions()
                 if await _dead_range(redis, p.dead_letters, dead_id, dead_id)]
        if not found:
            missing.append(dead_id)
        elif len(found) > 1:
            raise AmbiguousId(f"{dead_id} is on the dead streams of partitions "
                              f"{', '.join(map(str, found))}: name one with --partition")
    if missing:
        raise UnknownIds(f"no such dead letter: {', '.join(missing)}")


async def count_upper_bound(redis: RedisClient, selection: Selection) -> int:
    """At most how many letters the selection holds (for a progress bar)."""
    if selection.ids:
        total = len(selection.ids)
    else:
        total = 0
        for partition in selection.selected_partitions():
            with failing_as("Redis"):
                total += int(await redis.xlen(partition.dead_letters))
    return total if selection.limit is None else min(total, selection.limit)


async def _partition_pages(redis: RedisClient, partition: Partition, selection: Selection,
                           page_size: int) -> AsyncGenerator[list[DeadLetter], None]:
    stream = partition.dead_letters
    if selection.ids:
        for dead_id in selection.ids:
            found = await _dead_range(redis, stream, dead_id, dead_id)
            if found:
                yield [parse_letter(partition, *found[0])]
        return
    # Up to the last letter there now: one a replay sends back and the drain
    # dead-letters again lands after it, and is not replayed twice in one run.
    with failing_as("Redis"):
        last: Any = await redis.xrevrange(stream, "+", "-", count=1)
    if not last:
        return
    end, start = last[0][0].decode(), "-"
    while page := await _dead_range(redis, stream, start, end, page_size):
        yield [parse_letter(partition, dead_id, fields) for dead_id, fields in page]
        start = "(" + page[-1][0].decode()


async def scan(redis: RedisClient, selection: Selection, page_size: int = PAGE_SIZE,
               ) -> AsyncIterator[tuple[list[DeadLetter], int]]:
    """The selected letters a page at a time, partition by partition, oldest first,
    each page with how many entries were read for it (selected or not)."""
    remaining = selection.limit
    for partition in selection.selected_partitions():
        pages = _partition_pages(redis, partition, selection, page_size)
        async with contextlib.aclosing(pages):
            async for page in pages:
                chosen = [letter for letter in page if selection.matches(letter)]
                if remaining is not None:
                    chosen = chosen[:remaining]
                    remaining -= len(chosen)
                yield chosen, len(page)
                if remaining == 0:
                    return


async def list_letters(redis: RedisClient, selection: Selection) -> list[DeadLetter]:
    """Every selected letter (at most `selection.limit`)."""
    letters: list[DeadLetter] = []
    async for page, _ in scan(redis, selection):
        letters.extend(page)
    return letters


async def _forget(connection: asyncpg.Connection, letters: Sequence[DeadLetter],
                  outcome: Outcome) -> None:
    """Delete the PostgreSQL records of intake letters that left their dead stream."""
    intake = [letter for letter in letters if letter.kind == "intake"]
    if not intake:
        return
    with failing_as("PostgreSQL"):
        status = await connection.execute(QUERIES["forget_dead_letters"],
                                          [letter.source for letter in intake],
                                          [letter.entry_id for letter in intake])
    outcome.rows_deleted += int(status.split()[-1])


class Replayer:
    """Adds dead letters back to the streams they came from, each exactly once."""

    def __init__(self, redis: RedisClient, connection: asyncpg.Connection) -> None:
        self._script = PipelinedScript(redis, script_source("replay"))
        self._connection = connection

    async def replay(self, letters: Sequence[DeadLetter], outcome: Outcome) -> None:
        """Replay one page (one round trip); the counts go to `outcome`."""
        outcome.selected += len(letters)
        todo = [letter for letter in letters if letter.replayable]
        outcome.skipped += len(letters) - len(todo)
        calls: list[ScriptCall] = [
            ([Partition(letter.partition).dead_letters, letter.source],
             [letter.dead_id, *self._fields(letter)]) for letter in todo]
        with failing_as("Redis"):
            replies = await self._script.run_all(calls) if calls else []
        failure: BaseException | None = None
        left: list[DeadLetter] = []  # off the dead stream now
        for letter, reply in zip(todo, replies, strict=True):
            if isinstance(reply, BaseException):  # a cluster node down: its letters stay
                failure = failure or reply
            elif reply == 0:
                outcome.gone += 1
                left.append(letter)
            elif reply == -1:
                outcome.skipped += 1
            else:
                outcome.done += 1
                outcome.by_kind[letter.kind] += 1
                left.append(letter)
        await _forget(self._connection, left, outcome)
        if failure is not None:
            raise ServiceFailed("Redis", failure)

    @staticmethod
    def _fields(letter: DeadLetter) -> tuple[bytes, bytes]:
        """The dead entry's field to replay, and the field name it goes back under."""
        if letter.kind == "intake":
            return PAYLOAD_FIELD, STREAM_FIELD
        return REGISTRATION_FIELD, JOB_FIELD


async def drop(redis: RedisClient, connection: asyncpg.Connection,
               letters: Sequence[DeadLetter], outcome: Outcome) -> None:
    """Delete one page of dead letters (one round trip) and their records."""
    outcome.selected += len(letters)
    if not letters:
        return
    # One page is one partition's (see scan): one slot on a cluster.
    with failing_as("Redis"):
        async with redis.pipeline(transaction=False) as pipe:
            for letter in letters:
                _ = pipe.xdel(Partition(letter.partition).dead_letters, letter.dead_id)
            deleted: list[Any] = await pipe.execute()
    for letter, count in zip(letters, deleted, strict=True):
        if int(count):
            outcome.done += 1
            outcome.by_kind[letter.kind] += 1
        else:  # replayed or dropped meanwhile
            outcome.gone += 1
    await _forget(connection, letters, outcome)
