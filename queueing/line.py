"""The waiting room's line, as one door process knows it (docs/waiting-room.md).

`Line` holds the line in force in memory (`LineView`), refreshed by one script
call per tick, so a ticket's place is answered without Redis: its position
against the served counter, minus the gone positions in between. Joins, the
first look-up of a drawn pre-queue ticket, the look-up of a ticket at or behind
the served counter, leaving and recording a registration each cost one call.
Every call goes through queueing/lua/line.lua.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from config.settings import WaitingRoomSettings
from queueing.call_groups import CallGroups
from queueing.keys import STANDING_WAVE, WaveKeys
from queueing.line_view import LineView, text
from queueing.queue_tickets import Ticket, TicketSigner, lottery_member, ticket_id
from queueing.redis_client import REDIS_UNAVAILABLE, RedisClient
from queueing.scripts import PipelinedScript, script_source
from queueing.waves import read_waves, wave_in_force

log = logging.getLogger(__name__)

LINE_SCRIPT: Final = script_source("line")
# p90 of the ETA: the line served at 85 % of its measured rate, plus one poll.
P90_RATE_SHARE: Final = 0.85
# A ticket of another wave makes the door tick at once, at most this often.
CATCH_UP_SECONDS: Final = 1.0


class TicketError(Exception):
    """A ticket the line cannot honour (the HTTP edge answers each type)."""


class TicketNotOurs(TicketError):
    """Signed, but for another NIK: answered as an invalid ticket."""


class LineUnknown(TicketError):
    """This door has not read the line yet (Redis away since it started): answered 503."""


class TicketExpired(TicketError):
    """Its turn passed, it was skipped or left, or its wave is not in force."""

    def __init__(self, place: Place) -> None:
        super().__init__("ticket expired")
        self.place = place


@dataclass(frozen=True, slots=True)
class Place:
    """A ticket's place in the line, as a ticket answer shows it."""

    state: str  # prequeue | waiting | your_turn | expired | registered
    ticket: Ticket
    token: str
    ahead: int | None = None
    # Seconds: p50, p90; None unless prequeue or waiting.
    eta: tuple[float, float] | None = None
    opens_at: int | None = None
    turn_valid_until: float | None = None  # Unix seconds
    registration_id: bytes | None = None
    poll_after: float = 1.0


class Line:
    """The line in force, for one door process: its view, its tick and its calls."""

    def __init__(self, redis: RedisClient, settings: WaitingRoomSettings, signer: TicketSigner,
                 release_rate: Callable[[], float], timeout: float,
                 on_call: Callable[[str, int], None] = lambda kind, calls: None) -> None:
        self._redis = redis
        self.settings = settings
        self.signer = signer
        self._script = PipelinedScript(redis, LINE_SCRIPT)
        self._release_rate = release_rate
        self._timeout = timeout
        self.view = LineView()
        # Ticket ids polled here since the last tick (written with it).
        self._seen: set[bytes] = set()
        self._max_tail = 0
        self._max_served = 0
        self._stopping = asyncio.Event()
        # One tick at a time (the periodic one, or a catch-up).
        self._ticking = asyncio.Lock()
        self._ticked_at = float("-inf")
        self._next_change = float("inf")
        self._joins: CallGroups[tuple[bytes, bytes], Any] = CallGroups(
            lambda group: self._grouped("join", group))
        self._lookups: CallGroups[tuple[bytes, bytes], Any] = CallGroups(
            lambda group: self._grouped("lookup", group))
        self._claims: CallGroups[tuple[bytes, bytes], Any] = CallGroups(
            lambda group: self._grouped("claim", group))
        self._registrations: CallGroups[tuple[bytes, bytes], Any] = CallGroups(
            lambda group: self._grouped("registered", group))
        # Told of every Redis round trip made for tickets (joins, look-ups, ticks):
        # the opening-crush report divides them by the polls.
        self._on_call = on_call

    # -- the tick -----------------------------------------------------------

    def rate(self) -> float:
        """Positions released a second (waiting_room.release_rate, else admission's)."""
        return self.settings.release_rate or self._release_rate()

    async def tick(self, paused: bool = False) -> None:
        """Bring this door's view up to date and advance the line: one round trip,
        and one more to re-read the scheduled waves."""
        async with self._ticking:
            await self._tick(paused)

    async def _tick(self, paused: bool) -> None:
        waves = await read_waves(self._redis)
        self._ticked_at = time.monotonic()
        schedule = wave_in_force(waves, time.time())
        # The next moment another wave may be in force: a request after it brings the
        # view up to date first, instead of waiting for the tick (catch_up()).
        self._next_change = min((moment for wave in waves
                                 for moment in (wave.prequeue_from, wave.closes_at)
                                 if moment > time.time()), default=float("inf"))
        wave = STANDING_WAVE if schedule is None else schedule.wave
        current = self.view
        now = time.time()
        if (wave != current.wave and current.fresh and 0 < current.closes_at <= now) and (
                current.waiting > 0
                or current.last_turn_ms() / 1000 > now - self.settings.turn_seconds):
            # A wave that closed keeps its line in force until everyone in it had their
            # turn and the last turn ran out: closing stops joining, not serving.
            wave = current.wave
        if wave != self.view.wave:
            self.view = LineView(wave=wave)
            self._max_tail = self._max_served = 0
        view = self.view
        seen, self._seen = self._seen, set()
        args: list[str | bytes | int] = [
            "tick", repr(0.0 if paused else self.rate()), repr(self.settings.idle_seconds),
            repr(self.settings.turn_seconds), self._max_tail, self._max_served,
            view.gone_cursor, view.turns[-1][0] if view.turns else -1, *seen]
        self._on_call("tick", 2)
        view.apply(await self._script.run(WaveKeys(wave).all(), args))
        self._forget_old_turns(view)
        self._max_tail = max(self._max_tail, view.tail)
        self._max_served = max(self._max_served, view.served)

    def _forget_old_turns(self, view: LineView) -> None:
        horizon_ms = (time.time() - self.settings.turn_seconds - 60) * 1000
        keep = 0
        while keep < len(view.turns) - 1 and view.turns[keep][1] < horizon_ms:
            keep += 1
        del view.turns[:keep]

    async def run(self, paused: Callable[[], bool] = lambda: False) -> None:
        """Tick every tick_seconds until stop(); a failed tick is logged by type and retried."""
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(self._timeout):
                    await self.tick(paused())
            except REDIS_UNAVAILABLE as exc:
                log.warning("waiting room: line not read (%s)", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.tick_seconds)

    def stop(self) -> None:
        """End run() at its next turn."""
        self._stopping.set()

    # -- decisions the door makes without Redis ------------------------------

    def queues_first(self) -> bool:
        """Whether a registration without a ticket joins the line instead of trying
        the bucket: in a pre-queue, or while people are waiting (no one overtakes); and
        once another wave may be in force, until a tick says which (join() catches up)."""
        view = self.view
        return view.fresh and (view.phase == "prequeue" or view.tail > view.served
                               or time.time() >= self._next_change)

    async def catch_up(self, wave: str | None = None) -> None:
        """Tick now when another wave may be in force since the last tick: its time came,
        or a ticket of another wave was shown (a sibling door ticked first). At most
        one such tick a second, one at a time."""
        due = time.time() >= self._next_change or (
            wave is not None and wave != self.view.wave
            and time.monotonic() - self._ticked_at >= CATCH_UP_SECONDS)
        if not due:
            return
        async with asyncio.timeout(self._timeout):
            if self._ticking.locked():
                async with self._ticking:
                    return  # the tick in flight brings the view up to date
            await self.tick()

    # -- calls --------------------------------------------------------------

    def _member(self, ticket: bytes) -> bytes:
        seed = self.view.seed
        return lottery_member(seed, ticket) if seed else b""

    async def _grouped(self, mode: str, group: Sequence[tuple[bytes, bytes]]) -> Any:
        """One call for a group of joins or look-ups (line.lua), in the line in force."""
        args: list[str | bytes | int] = [mode, repr(self.settings.turn_seconds)]
        for ticket, member in group:
            args += (ticket, member)
        return await self._call(self.view.wave, *args)

    async def _call(self, wave: str, *args: str | bytes | int) -> Any:
        self._on_call(str(args[0]), 1)
        async with asyncio.timeout(self._timeout):
            return await self._script.run(WaveKeys(wave).all(), args)

    async def join(self, nik_hash: bytes) -> Place:
        """A place for this NIK: its own if it has one, else a new one at the back
        (or in the pre-queue). Raises TicketExpired when the wave closed."""
        await self.catch_up()
        view = self.view
        if not view.fresh:
            raise LineUnknown
        tid = ticket_id(view.wave, nik_hash)
        async with asyncio.timeout(self._timeout):
            reply = await self._joins.call((tid, self._member(tid)))
        state, position, joined = text(reply[0]), int(reply[1]), int(reply[2])
        ticket = Ticket(view.wave, tid, position, joined)
        if state == "registered":
            return self._place(ticket, "registered", registration_id=bytes(reply[3]))
        if state == "closed":
            raise TicketExpired(self._place(ticket, "expired"))
        self._max_tail = max(self._max_tail, position)
        if state == "prequeue":
            return self._place(ticket, "prequeue")
        return await self.place(ticket)

    async def place(self, ticket: Ticket, token: str | None = None) -> Place:
        """Where a valid ticket stands now. Polls of a waiting ticket cost no Redis.

        `token`: the ticket as the client sent it, answered back unchanged while
        the ticket is (no signing per poll). Raises TicketExpired for an expired
        ticket.
        """
        if ticket.wave != self.view.wave:
            await self.catch_up(ticket.wave)
        view = self.view
        if not view.fresh:
            raise LineUnknown
        self._seen.add(ticket.ticket_id)
        if ticket.wave != view.wave:
            raise TicketExpired(self._place(ticket, "expired"))
        if ticket.position == 0:
            if view.phase == "prequeue":
                return self._place(ticket, "prequeue", token=token)
            # Drawn since: learn the position (once; the answer carries a new ticket).
            ticket, token = await self._located(ticket), None
        position = ticket.position
        if position > view.served:
            if view.is_gone(position):
                raise TicketExpired(self._place(ticket, "expired"))
            return self._place(ticket, "waiting", token=token)
        return await self._at_the_front(ticket)

    async def _located(self, ticket: Ticket) -> Ticket:
        registration, position, gone, _, joined = await self._lookup(ticket)
        if registration or position == 0 or gone:
            state = "registered" if registration else "expired"
            place = self._place(ticket, state, registration_id=registration or None)
            if registration:
                raise TicketUsedError(place)
            raise TicketExpired(place)
        return Ticket(ticket.wave, ticket.ticket_id, position, joined)

    async def _lookup(self, ticket: Ticket) -> tuple[bytes, int, bool, int, int]:
        async with asyncio.timeout(self._timeout):
            reply = await self._lookups.call((ticket.ticket_id, self._member(ticket.ticket_id)))
        return bytes(reply[0]), int(reply[1]), bool(int(reply[2])), int(reply[3]), int(reply[4])

    async def _at_the_front(self, ticket: Ticket) -> Place:
        registration, _, gone, turn_ms, _ = await self._lookup(ticket)
        if registration:
            raise TicketUsedError(self._place(ticket, "registered", registration_id=registration))
        valid_until = turn_ms / 1000 + self.settings.turn_seconds if turn_ms else 0.0
        if gone or valid_until <= time.time():
            raise TicketExpired(self._place(ticket, "expired"))
        return self._place(ticket, "your_turn", turn_valid_until=valid_until)

    async def leave(self, ticket: Ticket) -> None:
        """Free the ticket's place (no longer counted ahead of anyone)."""
        await self._call(ticket.wave, "leave", ticket.ticket_id, self._member(ticket.ticket_id))

    async def registered(self, ticket: Ticket, registration_id: bytes) -> None:
        """Record that the ticket admitted this registration (its polls say so)."""
        async with asyncio.timeout(self._timeout):
            await self._registrations.call((ticket.ticket_id, registration_id))

    async def claim(self, place: Place, idempotency_key: str) -> None:
        """Take the ticket's turn for the request with this key; a retry of the same key
        may take it again. Raises TicketUsedError when another key holds it."""
        async with asyncio.timeout(self._timeout):
            reply = await self._claims.call((place.ticket.ticket_id, idempotency_key.encode()))
        if int(reply[0]) != 1:
            registration = bytes(reply[1])
            raise TicketUsedError(dataclasses.replace(
                place, state="registered", registration_id=registration or None, eta=None,
                ahead=None, turn_valid_until=None))

    async def release(self, ticket: Ticket, idempotency_key: str) -> None:
        """Give a claimed turn back: the admission certainly did not happen."""
        await self._call(ticket.wave, "release", ticket.ticket_id, idempotency_key)

    def _prequeue_eta(self, ticket: Ticket, rate: float,
                      poll: float) -> tuple[tuple[float, float], float]:
        """A pre-queue ticket's ETA and poll interval, from where the draw will put it.

        The draw sorts by lottery key, which is uniform: a ticket whose key is the
        fraction u of the key space will be drawn near u times the pre-queue's size
        (to within about the size's square root). So each ticket is told to come back
        shortly before its own turn, and the opening is not one poll of everyone at
        once (the first opening-crush run: 14,000 polls in the opening's second, the
        first 3,000 places taken late).
        """
        view = self.view
        until_open = max(0.0, view.opens_at - time.time())
        member = self._member(ticket.ticket_id)
        share = int.from_bytes(member[:8], "big") / 2**64 if member else 1.0
        size = max(view.prequeue_size, 1)
        expected = share * size
        spread = 2.0 * math.sqrt(size)  # two standard deviations of the drawn position
        p50 = until_open + expected / rate
        p90 = until_open + (expected + spread) / (rate * P90_RATE_SHARE)
        # Back a little before the turn (the client adds up to a fifth): at least the
        # spread's worth and a second early, never more than a poll interval away.
        back = until_open + max(0.0, (expected - spread) / rate - 1.0)
        return (p50, p90), max(1.0, min(poll, 0.8 * back))

    def _place(self, ticket: Ticket, state: str, *, token: str | None = None,
               registration_id: bytes | None = None,
               turn_valid_until: float | None = None) -> Place:
        view = self.view
        rate = max(view.measured_rate(self.rate()), 1e-9)
        poll = self.settings.poll_seconds
        ahead: int | None = None
        eta: tuple[float, float] | None = None
        if state == "waiting":
            ahead = view.ahead(ticket.position)
            p50 = ahead / rate
            eta = (p50, ahead / (rate * P90_RATE_SHARE) + min(poll, p50))
            # Poll more often as the turn nears, never more than once a second.
            poll = max(1.0, min(poll, p50 / 2))
        elif state == "prequeue":
            eta, poll = self._prequeue_eta(ticket, rate, poll)
        elif state == "your_turn":
            poll = 1.0
        return Place(
            state=state,
            ticket=ticket,
            token=token or self.signer.sign(ticket),
            ahead=ahead,
            eta=eta,
            opens_at=view.opens_at if view.wave != STANDING_WAVE else None,
            turn_valid_until=turn_valid_until,
            registration_id=registration_id,
            poll_after=poll,
        )


class TicketUsedError(TicketError):
    """The ticket already admitted a registration."""

    def __init__(self, place: Place) -> None:
        super().__init__("ticket used")
        self.place = place
