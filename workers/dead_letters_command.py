"""`gelombang dead-letters list|replay|drop`: what the drain and the verification
workers gave up on, put back or thrown away by an operator (workers/dead_letters.py).

Nothing printed quotes a payload: letters are shown by partition, id, kind,
reason, deliveries and age (a job also by its registration id). Every replay
and drop is audited (`dead_letters.replay.start` / `.done`, `dead_letters.drop.*`)
with the selection, the counts and the outcome, a failed run's included.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any, Final

import asyncpg
import orjson

from config.settings import Settings
from queueing.audit import append_audit, command_identity
from queueing.redis_client import RedisClient, connect
from workers.dead_letters import (
    LETTER_KINDS,
    DeadLetter,
    DeadLetterError,
    Outcome,
    Replayer,
    Selection,
    check_ids,
    count_upper_bound,
    drop,
    failing_as,
    list_letters,
    scan,
)
from workers.progress import ProgressBar

PROG: Final = "gelombang dead-letters"
LIST_LIMIT: Final = 1000
CONNECT_TIMEOUT_SECONDS: Final = 5.0
# One statement per page of dead letters (PAGE_SIZE): a minute is ample.
COMMAND_TIMEOUT_SECONDS: Final = 60.0

# Acts on one page of letters, adding to the outcome.
Act = Callable[[list[DeadLetter], Outcome], Awaitable[None]]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _filters(parser: argparse.ArgumentParser, *, limit: int | None, ids: bool) -> None:
    parser.add_argument("--kind", action="append", choices=LETTER_KINDS,
                        help="only this kind (repeatable; default: every kind)")
    parser.add_argument("--partition", action="append", type=int, metavar="N",
                        help="only this partition (repeatable; default: every partition)")
    parser.add_argument("--limit", type=_positive, default=limit,
                        help="at most this many, oldest first per partition "
                             f"(default: {limit or 'no limit'})")
    if ids:
        parser.add_argument("--id", action="append", dest="ids", metavar="DEADSTREAMID",
                            help="only this dead letter, by its id on the dead stream "
                                 "(repeatable)")


def register(subparsers: Any) -> None:
    """Add the `dead-letters` subcommand."""
    parser = subparsers.add_parser("dead-letters", help="list, replay or drop dead letters")
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="one row per dead letter, every partition")
    _filters(listing, limit=LIST_LIMIT, ids=False)
    listing.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    listing.set_defaults(handler=run_list)
    replay = actions.add_parser("replay", help="put dead letters back where they came from")
    _filters(replay, limit=None, ids=True)
    replay.set_defaults(handler=run_replay)
    dropping = actions.add_parser("drop", help="delete dead letters (needs --yes)")
    _filters(dropping, limit=None, ids=True)
    dropping.add_argument("--yes", action="store_true",
                          help="drop them; without it, only say what would be dropped")
    dropping.set_defaults(handler=run_drop)


def _selection(args: argparse.Namespace, settings: Settings) -> Selection:
    count = settings.queue.partitions
    for index in args.partition or ():
        if not 0 <= index < count:
            raise DeadLetterError(f"no partition {index}: partitions are 0-{count - 1}")
    ids = tuple(dict.fromkeys(getattr(args, "ids", None) or ()))  # each once, in order
    for dead_id in ids:
        first, _, second = dead_id.partition("-")
        if not (first.isdigit() and second.isdigit()):
            raise DeadLetterError(f"not a stream id: {dead_id!r} (like 1718000000000-0)")
    return Selection(count, frozenset(args.kind or ()), tuple(args.partition or ()), ids,
                     args.limit)


def _redis(settings: Settings) -> RedisClient:
    timeout = settings.redis.timeout_seconds
    return connect(settings.redis, socket_timeout=timeout, socket_connect_timeout=timeout)


def _run(command: Callable[[Settings, Selection], Coroutine[Any, Any, int]],
         args: argparse.Namespace) -> int:
    """Run a subcommand; an error is one line on stderr and exit status 1 (Ctrl-C: 130)."""
    settings = Settings.load()
    try:
        return asyncio.run(command(settings, _selection(args, settings)))
    except DeadLetterError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _age(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(max(seconds, 0))}s"


def render_table(letters: list[DeadLetter], now: float) -> str:
    """The letters as aligned text, one row each."""
    lines = [f"{'partition':>9}  {'id':<16}  {'kind':<7} {'deliveries':>10} {'age':>5}  reason"]
    for letter in letters:
        deliveries = "-" if letter.deliveries is None else str(letter.deliveries)
        lines.append(f"{letter.partition:>9}  {letter.dead_id:<16}  {letter.kind:<7} "
                     f"{deliveries:>10} {_age(now - letter.dead_at):>5}  {letter.reason}")
    return "\n".join(lines) + "\n"


def run_list(args: argparse.Namespace) -> int:
    """Print the selected dead letters, as a table or JSON."""
    async def listing(settings: Settings, selection: Selection) -> int:
        redis = _redis(settings)
        try:
            # One more than asked for, to say whether the list was cut short.
            letters = await list_letters(redis, dataclasses.replace(
                selection, limit=selection.limit + 1 if selection.limit else None))
        finally:
            await redis.aclose()
        shown = letters[:selection.limit] if selection.limit else letters
        now = time.time()
        if args.json:
            sys.stdout.write(orjson.dumps([letter.row(now) for letter in shown]).decode() + "\n")
        elif shown:
            sys.stdout.write(render_table(shown, now))
        else:
            print("no dead letters")
        if len(letters) > len(shown):
            print(f"{PROG}: only the first {len(shown)} shown; raise --limit for more",
                  file=sys.stderr)
        return 0

    return _run(listing, args)


async def _audited(settings: Settings, selection: Selection, verb: str,
                   make_act: Callable[[RedisClient, asyncpg.Connection], Act],
                   outcome: Outcome) -> None:
    """Act on the selection page by page, audited before (nothing changes unless that
    entry is written) and after, with the outcome, also when it fails part-way."""
    redis = _redis(settings)
    try:
        with failing_as("PostgreSQL"):
            connection = await asyncpg.connect(settings.postgres.dsn,
                                               timeout=CONNECT_TIMEOUT_SECONDS,
                                               command_timeout=COMMAND_TIMEOUT_SECONDS)
        try:
            if selection.ids:
                await check_ids(redis, selection)
            who, where = command_identity()
            action = f"dead_letters.{verb}"
            with failing_as("Redis"):
                await append_audit(redis, actor=who, source=where, action=f"{action}.start",
                                   details=selection.describe())
            result = "ok"
            try:
                label = "replaying" if verb == "replay" else "dropping"
                await _pages(redis, selection, make_act(redis, connection), outcome,
                             ProgressBar(label, "dead letters"))
            except BaseException as exc:  # recorded, then re-raised (CancelledError too)
                result = (f"failed: {exc}" if isinstance(exc, DeadLetterError)
                          else f"interrupted ({type(exc).__name__})")
                raise
            finally:
                try:
                    with failing_as("Redis"):
                        await append_audit(redis, actor=who, source=where,
                                           action=f"{action}.done",
                                           details={**selection.describe(), **outcome.report(),
                                                    "outcome": result})
                except DeadLetterError as exc:
                    print(f"{PROG}: the outcome could not be audited: {exc}", file=sys.stderr)
        finally:
            await connection.close()
    finally:
        await redis.aclose()


async def _pages(redis: RedisClient, selection: Selection, act: Act, outcome: Outcome,
                 progress: ProgressBar) -> None:
    total = await count_upper_bound(redis, selection)
    seen = 0
    progress(seen, total)
    async for page, read in scan(redis, selection):
        await act(page, outcome)
        seen = min(seen + read, total)
        progress(seen, total)
    if seen < total:  # letters removed meanwhile
        progress(total, total)


def _summary(done: str, outcome: Outcome) -> str:
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(outcome.by_kind.items()))
    text = f"{done} {outcome.done} dead letters" + (f" ({kinds})" if kinds else "")
    if outcome.gone:
        text += f"; {outcome.gone} already gone (replayed or dropped meanwhile)"
    if outcome.skipped:
        text += f"; {outcome.skipped} skipped: nothing to replay (drop them instead)"
    return text + f"; {outcome.rows_deleted} PostgreSQL records removed"


async def _act(settings: Settings, selection: Selection, verb: str, done: str,
               make_act: Callable[[RedisClient, asyncpg.Connection], Act]) -> int:
    outcome = Outcome()
    try:
        await _audited(settings, selection, verb, make_act, outcome)
    except DeadLetterError as exc:
        if outcome.selected:  # failed part-way: say how far it got
            raise DeadLetterError(f"{exc}; before that: {_summary(done, outcome)}") from exc
        raise
    print(_summary(done, outcome))
    return 0


def run_replay(args: argparse.Namespace) -> int:
    """Replay the selected dead letters and say how many went back."""
    def replayer(redis: RedisClient, connection: asyncpg.Connection) -> Act:
        return Replayer(redis, connection).replay

    return _run(lambda settings, selection: _act(settings, selection, "replay", "replayed",
                                                 replayer), args)


def run_drop(args: argparse.Namespace) -> int:
    """Drop the selected dead letters with --yes; without it, say what would go (exit 1)."""
    def dropper(redis: RedisClient, connection: asyncpg.Connection) -> Act:
        return partial(drop, redis, connection)

    async def dry_run(settings: Settings, selection: Selection) -> int:
        redis = _redis(settings)
        try:
            if selection.ids:
                await check_ids(redis, selection)
            kinds: Counter[str] = Counter()
            async for page, _ in scan(redis, selection):
                kinds.update(letter.kind for letter in page)
        finally:
            await redis.aclose()
        listed = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
        print(f"would drop {kinds.total()} dead letters" + (f" ({listed})" if listed else "")
              + "; nothing dropped: add --yes to drop them", file=sys.stderr)
        return 1

    if not args.yes:
        return _run(dry_run, args)
    return _run(lambda settings, selection: _act(settings, selection, "drop", "dropped",
                                                 dropper), args)
