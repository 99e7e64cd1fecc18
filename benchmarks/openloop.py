"""An open-loop HTTP/1.1 load generator: POSTs at a fixed arrival rate, whatever the server does.

A closed-loop client (wrk, a pool of workers each waiting for its answer)
sends the next request only when the last one came back, so a slow server
slows the arrivals and the queueing it causes never shows in the latencies
("coordinated omission"). Here request i is due at start + i/rate (or on a
rate profile) and goes out then on an idle keep-alive connection, or on a new
one when every open connection is busy (up to a cap; past it the request
waits in a queue, still on the clock). Its latency runs from the time it was
*due* to the last byte of its response, so whatever made it wait (the
server's queue, a connection still being opened, the generator's own lag)
is in the figure. Timers on uvloop (libuv) have millisecond resolution, so a
request goes out up to about a millisecond after it is due (with every other
request due by then); the generator does not spin on its core, which it
shares with Redis in the latency suite. It also records how late it was in sending, so
a run where it could not keep up can be told apart and rejected.

Low-level asyncio protocols on uvloop: aiohttp's client costs several
hundred microseconds per request, which is most of the budget at 4,000/s on
one core. Only what the door and the baselines answer is parsed: a status
line, headers and a Content-Length body; a response without a length is
counted as an error and its connection closed.

Run it in its own process, pinned to a core away from the server's, with
`python -m benchmarks.openloop ... --out result.json` (`run_in_process`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import uvloop

_TIMER_S = 0.001

@dataclass
class OpenLoopResult:
    """What one open-loop run offered, what came back and how fast."""

    offered: int                # requests scheduled
    completed: int              # responses received
    statuses: dict[int, int]    # status -> count
    errors: int                 # connection errors / resets / unparseable responses
    unfinished: int             # no response by the end of the drain timeout
    latencies_ms: list[float]   # per completed request, from its scheduled time (all statuses)
    accepted_latencies_ms: list[float]  # only 202s
    max_send_lag_ms: float      # generator's own worst lateness in sending
    duration_s: float           # the arrival window: from the first to the last due time
    send_lag_p99_ms: float = 0.0
    connections_opened: int = 0
    max_open_connections: int = 0
    # Requests that found every connection busy and the cap reached, so they
    # waited in the generator for a connection (on the clock all the same).
    queued_for_connection: int = 0
    wall_s: float = 0.0          # the whole run, drain included
    cpu_s: float = 0.0           # the generator process's CPU time over the run
    rate: float = 0.0            # the constant rate asked for (0 with a profile)

    def percentile(self, q: float, accepted_only: bool = True) -> float:
        """The q-th percentile (0-100) of latency in ms; NaN when nothing completed."""
        return percentile(self.accepted_latencies_ms if accepted_only else self.latencies_ms, q)

    @property
    def completed_ratio(self) -> float:
        """Responses received per request offered."""
        return self.completed / self.offered if self.offered else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (status keys become strings)."""
        data = asdict(self)
        data["statuses"] = {str(k): v for k, v in self.statuses.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OpenLoopResult:
        """The inverse of to_json."""
        data = dict(data)
        data["statuses"] = {int(k): v for k, v in data["statuses"].items()}
        return cls(**data)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (as numpy's default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class _Run:
    """Shared state of one run: the clock, the idle connections, the counts."""

    host: str
    port: int
    start: float
    requests: Callable[[int], bytes]
    max_connections: int
    connections: set[_Connection] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    idle: list[_Connection] = field(default_factory=list)
    # Requests waiting for a connection: (index, due time).
    waiting: collections.deque[tuple[int, float]] = field(default_factory=collections.deque)
    open_connections: int = 0
    connecting: int = 0
    connections_opened: int = 0
    max_open: int = 0
    outstanding: int = 0
    completed: int = 0
    errors: int = 0
    queued_for_connection: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)
    all_done: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    # Told each answer: (request index, status, body); for who needs answers per request.
    on_answer: Callable[[int, int, bytes], None] | None = None

    def finished_one(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0:
            self.all_done.set()


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due: float | None = None  # due time of the request in flight
        self.index = -1  # and its index
        self.alive = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but are one.
        self.transport = cast(asyncio.Transport, transport)
        self.alive = True
        self.run.connections.add(self)

    def send(self, index: int, due: float) -> None:
        assert self.transport is not None
        self.due, self.index = due, index
        self.transport.write(self.run.requests(index))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        # One request at a time: at most one response is expected; parse it
        # once its headers and its whole body are here.
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.due is None:
            if self.due is None and data:
                self._fail()  # bytes nobody asked for
            return
        head = bytes(self.buffer[:end]).lower()
        length_at = head.find(b"\r\ncontent-length:")
        if length_at < 0:
            self._fail()
            return
        line_end = head.find(b"\r\n", length_at + 2)
        try:
            length = int(head[length_at + 17: line_end if line_end > 0 else len(head)])
            status = int(head[9:12])
        except ValueError:
            self._fail()
            return
        if len(self.buffer) < end + 4 + length:
            return
        now = time.perf_counter()
        run, due = self.run, self.due
        latency_ms = (now - due) * 1000.0
        run.latencies.append(latency_ms)
        if status == 202:
            run.accepted.append(latency_ms)
        run.statuses[status] += 1
        run.completed += 1
        if run.on_answer is not None:
            run.on_answer(self.index, status, bytes(self.buffer[end + 4: end + 4 + length]))
        self.due = None
        del self.buffer[: end + 4 + length]
        run.finished_one()
        if b"\r\nconnection: close" in head:
            self._close()
            return
        self._next()

    def _next(self) -> None:
        """Take the oldest waiting request, or go idle."""
        run = self.run
        if run.waiting:
            index, due = run.waiting.popleft()
            self.send(index, due)
        elif not run.closing:
            run.idle.append(self)
        else:
            self._close()

    def _fail(self) -> None:
        if self.due is not None:
            self.due = None
            self.run.errors += 1
            self.run.finished_one()
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        run = self.run
        run.connections.discard(self)
        if self.alive:
            self.alive = False
            run.open_connections -= 1
        if self in run.idle:
            run.idle.remove(self)
        if self.due is not None and not run.closing:
            # Reset or closed with the request unanswered. (Closed by the
            # generator after the drain timeout: counted as unfinished.)
            self.due = None
            run.errors += 1
            run.finished_one()
        if run.waiting and not run.closing:
            # Waiting requests need a connection in place of this one.
            _open(run, *run.waiting.popleft())


def _open(run: _Run, index: int, due: float) -> None:
    """Open a new connection for request `index` (its connect time is on its clock)."""
    run.connecting += 1
    run.connections_opened += 1
    task = asyncio.get_running_loop().create_task(_connect(run, index, due))
    # The loop keeps only weak references to tasks.
    run.tasks.add(task)
    task.add_done_callback(run.tasks.discard)


async def _connect(run: _Run, index: int, due: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        _, protocol = await loop.create_connection(lambda: _Connection(run), run.host, run.port)
    except OSError:
        run.connecting -= 1
        run.errors += 1
        run.finished_one()
        return
    run.connecting -= 1
    run.open_connections += 1
    run.max_open = max(run.max_open, run.open_connections)
    if run.closing:
        protocol.transport.close()  # type: ignore[union-attr]
        return
    protocol.send(index, due)


def _dispatch(run: _Run, index: int, due: float) -> None:
    """Send request `index` now: idle connection, else a new one, else wait for one."""
    run.outstanding += 1
    run.all_done.clear()
    while run.idle:
        connection = run.idle.pop()  # most recently used: fewer connections stay warm
        if connection.alive:
            connection.send(index, due)
            return
    if run.open_connections + run.connecting < run.max_connections:
        _open(run, index, due)
    else:
        run.queued_for_connection += 1
        run.waiting.append((index, due))


def _request_maker(host: str, port: int, path: str, bodies: Sequence[bytes],
                   headers: Callable[[int], dict[str, str]] | None) -> Callable[[int], bytes]:
    """Request i's bytes; prebuilt per body unless headers vary per request."""
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\n").encode()
    if headers is None:
        built = [head + b"Content-Length: %d\r\n\r\n" % len(body) + body for body in bodies]
        return lambda i: built[i % len(built)]

    def make(i: int) -> bytes:
        body = bodies[i % len(bodies)]
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers(i).items()).encode()
        return head + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body

    return make


async def run_open_loop(host: str, port: int, path: str, bodies: Sequence[bytes], rate: float,
                        seconds: float, *, headers: Callable[[int], dict[str, str]] | None = None,
                        max_connections: int = 1000, drain_timeout: float = 10.0,
                        rate_at: Callable[[float], float] | None = None,
                        preconnect: int = 0,
                        on_answer: Callable[[int, int, bytes], None] | None = None,
                        ) -> OpenLoopResult:
    """Offer POSTs at `rate` per second (or `rate_at(t)`) for `seconds`; measure from due times.

    `bodies[i % len(bodies)]` is request i's body and `headers(i)` its extra
    headers. `preconnect` connections are opened before the clock starts (so
    the first requests do not pay for the connect, as in a warm service).
    `on_answer(i, status, body)` is told each answer as it comes.
    """
    if not bodies:
        raise ValueError("no bodies to send")
    if rate_at is None and rate <= 0:
        raise ValueError("rate must be positive (or give rate_at)")
    loop = asyncio.get_running_loop()
    cpu_before = _cpu_seconds()
    run = _Run(host=host, port=port, start=0.0,
               requests=_request_maker(host, port, path, bodies, headers),
               max_connections=max_connections, on_answer=on_answer)
    try:
        for _ in range(min(preconnect, max_connections)):
            try:
                _, protocol = await loop.create_connection(lambda: _Connection(run), host, port)
            except OSError:
                break
            run.connections_opened += 1
            run.open_connections += 1
            run.idle.append(protocol)
        run.max_open = run.open_connections
        lags: list[float] = []
        wall_start = time.perf_counter()
        start = run.start = wall_start + 0.001
        index, offset, last_offset = 0, 0.0, 0.0
        while offset < seconds:
            due = start + offset
            last_offset = offset
            # Never early (a latency counts from the due time). libuv's timers
            # have millisecond resolution and a shorter sleep fires on the next
            # loop iteration, which would spin; so sleep at least a millisecond
            # and check again (the timer may fire a little short).
            while (now := time.perf_counter()) < due:  # noqa: ASYNC110 - waiting for a time
                await asyncio.sleep(max(due - now, _TIMER_S))
            lags.append(max(0.0, now - due))
            _dispatch(run, index, due)
            index += 1
            step_rate = rate_at(offset) if rate_at is not None else rate
            # A rate of zero or less pauses arrivals for a millisecond.
            offset = index / rate if rate_at is None else \
                offset + (1.0 / step_rate if step_rate > 0 else 0.001)
        if run.outstanding:
            try:
                await asyncio.wait_for(run.all_done.wait(), drain_timeout)
            except TimeoutError:
                pass
        run.closing = True
        unfinished = run.outstanding
        # Busy connections too: their requests are counted as unfinished.
        await _close_all(run)
        return OpenLoopResult(
            offered=index, completed=run.completed, statuses=dict(run.statuses),
            errors=run.errors, unfinished=unfinished, latencies_ms=run.latencies,
            accepted_latencies_ms=run.accepted,
            max_send_lag_ms=max(lags, default=0.0) * 1000.0,
            duration_s=last_offset,
            send_lag_p99_ms=percentile(lags, 99) * 1000.0 if lags else 0.0,
            connections_opened=run.connections_opened, max_open_connections=run.max_open,
            queued_for_connection=run.queued_for_connection,
            wall_s=time.perf_counter() - wall_start, cpu_s=_cpu_seconds() - cpu_before,
            rate=rate if rate_at is None else 0.0)
    finally:
        run.closing = True
        await _close_all(run)


async def _close_all(run: _Run) -> None:
    """Close every transport this run opened (idle or busy) and every connect in flight."""
    run.waiting.clear()
    run.idle.clear()
    tasks = list(run.tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for connection in list(run.connections):
        connection._close()
    # Let the transports run connection_lost before the loop may close.
    await asyncio.sleep(0)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_sync(host: str, port: int, path: str, bodies: Sequence[bytes], rate: float,
             seconds: float, **options: Any) -> OpenLoopResult:
    """run_open_loop in a uvloop event loop of its own (blocks until done)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run_open_loop(host, port, path, bodies, rate, seconds, **options))


def run_in_process(host: str, port: int, path: str, bodies: Sequence[bytes], rate: float,
                   seconds: float, *, core: int | None = None, max_connections: int = 1000,
                   drain_timeout: float = 10.0, ramp_to: float | None = None,
                   idempotency_prefix: str | None = None, preconnect: int = 0,
                   scratch: Path | None = None) -> OpenLoopResult:
    """Run the generator as `python -m benchmarks.openloop` pinned to `core`; its result.

    `ramp_to` ramps the rate linearly from `rate` to `ramp_to` over the run;
    `idempotency_prefix` sends `Idempotency-Key: <prefix>-<i>` with request i.
    """
    from benchmarks import stack

    folder = Path(tempfile.mkdtemp(prefix="openloop-", dir=scratch))
    bodies_file, out = folder / "bodies.txt", folder / "result.json"
    write_bodies_file(bodies_file, bodies)
    command = [sys.executable, "-m", "benchmarks.openloop", "--host", host, "--port", str(port),
               "--path", path, "--bodies", str(bodies_file), "--rate", str(rate),
               "--seconds", str(seconds), "--max-connections", str(max_connections),
               "--drain-timeout", str(drain_timeout), "--preconnect", str(preconnect),
               "--out", str(out)]
    if ramp_to is not None:
        command += ["--ramp-to", str(ramp_to)]
    if idempotency_prefix is not None:
        command += ["--idempotency-prefix", idempotency_prefix]
    try:
        subprocess.run(stack.pinned(command, core), check=True, cwd=stack.REPO_ROOT)
        return OpenLoopResult.from_json(json.loads(out.read_text()))
    finally:
        for leftover in (bodies_file, out):
            leftover.unlink(missing_ok=True)
        folder.rmdir()


def write_bodies_file(path: Path, bodies: Sequence[bytes]) -> None:
    """Bodies one per line (compact JSON has no raw newlines)."""
    if any(b"\n" in body for body in bodies):
        raise ValueError("a body contains a newline; bodies must be compact JSON")
    path.write_bytes(b"\n".join(bodies) + b"\n")


def read_bodies_file(path: Path) -> list[bytes]:
    """The inverse of write_bodies_file."""
    return [line for line in path.read_bytes().split(b"\n") if line]


def main(argv: list[str] | None = None) -> int:
    """Command line: one run, its result as JSON (to --out, else stdout)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.openloop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/registrations")
    parser.add_argument("--bodies", type=Path, required=True, help="one body per line")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--ramp-to", type=float, default=None,
                        help="ramp linearly from --rate to this rate over the run")
    parser.add_argument("--max-connections", type=int, default=1000)
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--preconnect", type=int, default=0)
    parser.add_argument("--idempotency-prefix", default=None,
                        help="send Idempotency-Key: PREFIX-<i> with request i")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    rate_at: Callable[[float], float] | None = None
    if args.ramp_to is not None:
        low, high, span = float(args.rate), float(args.ramp_to), float(args.seconds)

        def rate_at(t: float) -> float:
            return low + (high - low) * min(t / span, 1.0)
    headers: Callable[[int], dict[str, str]] | None = None
    if args.idempotency_prefix is not None:
        prefix = args.idempotency_prefix

        def headers(i: int) -> dict[str, str]:
            return {"Idempotency-Key": f"{prefix}-{i}"}
    result = run_sync(args.host, args.port, args.path, read_bodies_file(args.bodies), args.rate,
                      args.seconds, headers=headers, max_connections=args.max_connections,
                      drain_timeout=args.drain_timeout, rate_at=rate_at,
                      preconnect=args.preconnect)
    text = json.dumps(result.to_json())
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text)
    print(f"offered {result.offered}, completed {result.completed}, "
          f"errors {result.errors}, unfinished {result.unfinished}, "
          f"p99 {result.percentile(99, accepted_only=False):.2f} ms, "
          f"max send lag {result.max_send_lag_ms:.2f} ms, cpu {result.cpu_s:.2f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
