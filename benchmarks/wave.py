"""Wave suite: the 2020 opening wave end to end, through the door, with the whole stack.

    python -m benchmarks wave [--count 80000] [--arrival-seconds 60] [--nik-capacity 500]
                              [--email-rate 10000] [--out DIR] [--tiny]

The whole stack on this one machine, started by the dev stack's own
supervisor (`loadtest.drills.stack.DrillStack`, as the fault drills), at its
CPU priorities (config `[nice]`: the background processes nicer than the
door, gelombang/priority.py): Redis
(AOF, appendfsync always), PostgreSQL (fsync on), `gelombang migrate`, the
door (`gelombang serve`, the deployment's admission settings: 1,500/s,
burst 3,000), `worker store`, `worker email` → `mail-sink`, `worker nik` →
`nik-sim` at `--nik-capacity` requests/s (the verification suite's settings:
`benchmarks.verification.verification_overrides`).

`--count` applicants, people the simulator's population knows, arrive
evenly over `--arrival-seconds` (80,000 in 60 s: 1,333/s) and POST
/v1/registrations over HTTP, each with its own Idempotency-Key, from the
open-loop generator (`benchmarks/openloop.py`: request i goes out at its
due time whatever the door does, on a free keep-alive connection or a new
one). The generator does not say which request got which answer, so
refusals are retried in passes: after a pass, every applicant whose key
has no idempotency record in Redis (not admitted: a 429, a 503, a broken
connection) is sent again with the same key, 1 s later (the door's
Retry-After for a 429 and an overloaded 503), at the same rate, until all
are admitted; the same key makes a retry of an admitted request a replay,
never a second registration. The clock starts at the first arrival.
Progress is sampled from PostgreSQL and Redis every second: when every
registration was stored (goal: 90 s), sent its email, and had its NIK
checked; what the simulator saw.

One round: a full wave takes about six minutes, most of it the NIK checks
at 500/s. `--tiny` (300 applicants over 3 s) checks the harness and
measures nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
import redis

from benchmarks import harness, openloop, verification
from benchmarks.admitted import PassAnswers, admitted_mask
from config.settings import Settings
from gelombang.processes import free_port
from loadtest.drills.stack import DrillStack
from loadtest.registrants import RegistrantFactory
from queueing.keys import partitions

# The goal: every registration of the wave stored this soon after its start.
STORED_GOAL_SECONDS: Final = 90.0
REGISTRATIONS_PATH: Final = "/v1/registrations"
# The door's Retry-After for a 429 and for an overloaded 503 (intake/registrations.py).
RETRY_WAIT_SECONDS: Final = 1.0
# Retry passes before the run gives up (each sends every applicant not admitted yet).
MAX_PASSES: Final = 20
# Open connections at most (the door holds 10,000); answers awaited this long after the
# last arrival of a pass.
MAX_CONNECTIONS: Final = 2000
DRAIN_TIMEOUT_SECONDS: Final = 60.0
TINY: Final = {"count": 300, "arrival_seconds": 3.0}
# Timeline columns after the time: stored, emails done, NIK checks done, arrived, admitted.
STORED, EMAILS, NIKS, ARRIVED, ADMITTED = range(5)
Point = tuple[float, int, int, int, int, int]


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks wave",
                                     description=__doc__.split("\n\n")[0])
    verification.add_wave_options(parser)
    parser.add_argument("--admission-rate", type=float, default=None,
                        help="the door's admission rate (default: the deployment's, "
                        "admission.rate_per_second); lower it to see refusals retried")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="seconds from the first arrival until everything must be done")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--tiny", action="store_true",
                        help=f"{TINY['count']} applicants over {TINY['arrival_seconds']:.0f} s: "
                        "checks the harness, measures nothing")
    args = parser.parse_args(argv)
    if args.tiny:
        args.count, args.arrival_seconds = int(TINY["count"]), TINY["arrival_seconds"]
    return args


def overrides(args: argparse.Namespace, root: Path) -> dict[str, dict[str, Any]]:
    """The stack's config over the dev stack's: free ports, the verification settings."""
    public, admin = free_port(), free_port()
    admission: dict[str, Any] = {}
    if args.admission_rate is not None:
        # A burst of one second's tokens, as the deployment's 1,500/s with 3,000 is two.
        admission = {"rate_per_second": args.admission_rate,
                     "burst": max(1, int(args.admission_rate))}
    return {"public": {"port": public, "base_url": f"http://127.0.0.1:{public}"},
            "admin": {"port": admin}, **({"admission": admission} if admission else {}),
            **verification.verification_overrides(args.nik_capacity, args.email_rate,
                                                   root / "mail")}


def applicants(settings: Settings, count: int) -> list[bytes]:
    """Bodies of people the simulator knows, in arrival order."""
    factory = RegistrantFactory(seed=2020)
    sim = settings.nik_sim
    return [orjson.dumps(factory.citizen(sim.population_seed, sim.existing_share).body())
            for _ in range(count)]


class Sampler(threading.Thread):
    """Progress every second from PostgreSQL and Redis, beside the generator's event loop."""

    def __init__(self, settings: Settings, started: float, rate: float, count: int,
                 run: harness.BenchRun) -> None:
        super().__init__(name="wave-sampler", daemon=True)
        self.settings, self.started, self.rate, self.count = settings, started, rate, count
        self.run_ = run
        self.timeline: list[Point] = []
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        """Sample until stopped (a failure is kept for the main thread)."""
        client = redis.Redis.from_url(self.settings.redis.url)
        streams = [p.stream for p in partitions(self.settings.queue.partitions)]
        try:
            while not self.stop.is_set():
                # Admitted = stored + still queued (entries leave the stream once stored);
                # the streams read first, so an entry stored meanwhile counts twice, never
                # zero times (hence the cap).
                queued = sum(int(client.xlen(stream)) for stream in streams)
                counts = asyncio.run(verification.progress(self.settings.postgres.dsn))
                elapsed = time.monotonic() - self.started
                arrived = min(self.count, int(elapsed * self.rate) + 1)
                admitted = min(self.count, counts[0] + queued)
                self.timeline.append((round(elapsed, 2), *counts, arrived, admitted))
                if len(self.timeline) % 10 == 1:
                    self.run_.progress(
                        f"{elapsed:6.1f} s: arrived {arrived:,}, admitted "
                        f"{admitted:,}, stored {counts[0]:,}, emails {counts[1]:,}, "
                        f"NIK checks {counts[2]:,}")
                self.stop.wait(max(0.0, self.started + len(self.timeline) - time.monotonic()))
        except BaseException as error:  # re-raised by the main thread
            self.failure = error
        finally:
            client.close()


@dataclass
class Sending:
    """What the generator's passes offered and got back."""

    passes: list[dict[str, Any]] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    retried: set[int] = field(default_factory=set)
    admitted: int = 0
    last_answer_s: float = 0.0
    max_send_lag_ms: float = 0.0


def send(args: argparse.Namespace, settings: Settings, bodies: list[bytes], started: float,
         run: harness.BenchRun) -> Sending:
    """The wave, open loop; then every applicant not admitted again, same key, until all are."""
    prefix = uuid.uuid4().hex[:16]
    keys = [f"{prefix}-{index}" for index in range(len(bodies))]
    client = redis.Redis.from_url(settings.redis.url)
    ttl = settings.queue.idempotency_ttl_seconds
    sending = Sending()
    todo = list(range(len(bodies)))
    rate = args.count / args.arrival_seconds
    try:
        while todo:
            if sending.passes:
                if len(sending.passes) > MAX_PASSES:
                    raise RuntimeError(f"{len(todo)} applicants still not admitted after "
                                       f"{MAX_PASSES} retry passes")
                sending.retried.update(todo)
                run.progress(f"retry pass {len(sending.passes)}: {len(todo):,} applicants "
                             f"not admitted, again after {RETRY_WAIT_SECONDS:.0f} s")
                time.sleep(RETRY_WAIT_SECONDS)
            indices = todo

            def headers(i: int, indices: list[int] = indices) -> dict[str, str]:
                return {"Idempotency-Key": keys[indices[i]]}

            answers = PassAnswers(len(indices))
            result = openloop.run_sync(
                "127.0.0.1", settings.public.port, REGISTRATIONS_PATH,
                [bodies[i] for i in indices], rate, len(indices) / rate, headers=headers,
                max_connections=MAX_CONNECTIONS, drain_timeout=DRAIN_TIMEOUT_SECONDS,
                on_answer=answers.record)
            sending.last_answer_s = time.monotonic() - started
            sending.statuses.update(result.statuses)
            sending.max_send_lag_ms = max(sending.max_send_lag_ms, result.max_send_lag_ms)
            sending.passes.append({
                "offered": result.offered, "completed": result.completed,
                "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
                "errors": result.errors, "unfinished": result.unfinished,
                "max_send_lag_ms": result.max_send_lag_ms,
                "p50_ms": result.percentile(50), "p99_ms": result.percentile(99),
                "max_open_connections": result.max_open_connections,
                "cpu_s": result.cpu_s, "ended_s": round(sending.last_answer_s, 2)})
            run.progress(f"pass {len(sending.passes)} answered after "
                         f"{sending.last_answer_s:.1f} s: {dict(result.statuses)}, errors "
                         f"{result.errors}, unfinished {result.unfinished}")
            found = admitted_mask(client, [keys[i] for i in indices],
                                  settings.queue.partitions, ttl)
            sending.passes[-1] |= {"admitted": sum(found), "outcome_unknown": answers.unknown,
                                   "refused_yet_admitted": answers.refused_yet_admitted(found)}
            todo = [i for i, admitted in zip(indices, found, strict=True) if not admitted]
        sending.admitted = sum(admitted_mask(client, keys, settings.queue.partitions, ttl))
    finally:
        client.close()
    return sending


def door_decisions(settings: Settings) -> dict[str, int]:
    """The door's admission outcomes over the run (`/metrics` on its admin port)."""
    import urllib.request

    url = f"http://127.0.0.1:{settings.admin.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    found = re.findall(r'^gelombang_admission_decisions_total\{outcome="(\w+)"\} (\S+)$',
                       text, re.M)
    return {outcome: int(float(value)) for outcome, value in found}


def wave(args: argparse.Namespace, stack: DrillStack, settings: Settings,
         run: harness.BenchRun) -> tuple[Sending, list[Point]]:
    """Send the wave; sample until all are stored, emailed and checked (or the timeout)."""
    bodies = applicants(settings, args.count)
    started = time.monotonic()
    sampler = Sampler(settings, started, args.count / args.arrival_seconds, args.count, run)
    sampler.start()
    try:
        sending = send(args, settings, bodies, started, run)
        while sampler.failure is None and (
                not sampler.timeline or min(sampler.timeline[-1][1:4]) < args.count):
            if time.monotonic() - started > args.timeout:
                raise RuntimeError(f"not done within {args.timeout:.0f} s: "
                                   f"{sampler.timeline[-1]}")
            for name in ("door", "worker-store", "worker-email", "worker-nik", "nik-sim",
                         "mail-sink"):
                stack.pid(name)  # LookupError: a process of the stack died
            time.sleep(0.5)
    finally:
        sampler.stop.set()
        sampler.join()
    if sampler.failure is not None:
        raise sampler.failure
    return sending, sampler.timeline


def first(timeline: list[Point], column: int, total: int) -> float | None:
    """When a column of the timeline first reached `total` (seconds since the wave began)."""
    return next((point[0] for point in timeline if point[1 + column] >= total), None)


def summarise(args: argparse.Namespace, sending: Sending, timeline: list[Point],
              sim: dict[str, Any]) -> dict[str, Any]:
    """The figures of the run, from the generator's passes and the timeline."""
    statuses = sending.statuses
    return {
        "count": args.count, "arrival_seconds": args.arrival_seconds,
        "arrival_rate": args.count / args.arrival_seconds, "nik_capacity": args.nik_capacity,
        "email_rate_limit": args.email_rate,
        "all_stored_s": first(timeline, STORED, args.count),
        "all_emails_s": first(timeline, EMAILS, args.count),
        "all_nik_checked_s": first(timeline, NIKS, args.count),
        "last_answer_s": sending.last_answer_s,
        "admitted": sending.admitted,
        "refused_answers": statuses.get(429, 0) + statuses.get(503, 0),
        "answers_429": statuses.get(429, 0), "answers_503": statuses.get(503, 0),
        "retried_applicants": len(sending.retried), "passes": sending.passes,
        # Admitted by a pass without a 202 in it: answered outcome_unknown, not at all, or
        # (a false refusal) 429/503 otherwise.
        "admitted_without_202": sum(p["admitted"] - p["statuses"].get("202", 0)
                                    for p in sending.passes),
        "outcome_unknown": sum(p["outcome_unknown"] for p in sending.passes),
        # Told "nothing stored" (429, or 503 other than outcome_unknown), yet admitted.
        "refused_yet_admitted": sum(p["refused_yet_admitted"] for p in sending.passes),
        "errors": sum(p["errors"] for p in sending.passes),
        "unfinished": sum(p["unfinished"] for p in sending.passes),
        "unexpected_answers": sum(n for status, n in statuses.items()
                                  if status not in (202, 429, 503)),
        "max_send_lag_ms": sending.max_send_lag_ms,
        "stored": timeline[-1][1 + STORED] if timeline else 0,
        "statuses": {str(status): n for status, n in sorted(statuses.items())},
        "simulator": sim,
        "timeline": [list(point) for point in timeline],
    }


def check(summary: dict[str, Any]) -> list[str]:
    """What went wrong: a registration lost or refused for good, or an answer off contract."""
    count = summary["count"]
    wrong = [f"{name}: {summary[name]}, expected {value}"
             for name, value in (("admitted", count), ("stored", count),
                                 ("unexpected_answers", 0), ("refused_yet_admitted", 0))
             if summary[name] != value]
    wrong += [f"{name} not reached" for name in ("all_stored_s", "all_emails_s",
                                                 "all_nik_checked_s") if summary[name] is None]
    return wrong


def table(summary: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    def seconds(value: float | None) -> str:
        return "not reached" if value is None else f"{value:.1f} s"

    sim = summary["simulator"]
    rows = [
        ("applicants (arrivals)", f"{summary['count']:,} over {summary['arrival_seconds']:.0f} s "
         f"({summary['arrival_rate']:,.0f}/s)"),
        ("admitted (202)", f"{summary['admitted']:,}"),
        ("refused answers (429 / 503)", f"{summary['answers_429']:,} / {summary['answers_503']:,}"),
        ("failure answered for an admitted registration (429, or 503 other than "
         "outcome_unknown; must be 0)", f"{summary['refused_yet_admitted']:,}"),
        ("503 outcome_unknown (sent, Redis did not say in time; a retry replays it)",
         f"{summary['outcome_unknown']:,}"),
        ("admitted without a 202 in their pass (unknown, unanswered or refused)",
         f"{summary['admitted_without_202']:,}"),
        ("applicants sent again (retry passes)", f"{summary['retried_applicants']:,} "
         f"({len(summary['passes']) - 1} pass(es))"),
        ("connection errors / unanswered", f"{summary['errors']} / {summary['unfinished']}"),
        ("generator's worst lateness", f"{summary['max_send_lag_ms']:.0f} ms"),
        ("door's answers during the wave, p50 / p99 (first pass, from each due time)",
         f"{summary['passes'][0]['p50_ms']:.0f} / {summary['passes'][0]['p99_ms']:.0f} ms"),
        ("last applicant answered", seconds(summary["last_answer_s"])),
        ("all stored", seconds(summary["all_stored_s"])),
        ("all verification emails sent", seconds(summary["all_emails_s"])),
        (f"all NIKs checked (simulator at {summary['nik_capacity']:.0f}/s)",
         seconds(summary["all_nik_checked_s"])),
        ("door's admission decisions (/metrics)", ", ".join(
            f"{name} {count:,}" for name, count in summary.get("door_decisions", {}).items())),
        ("simulator: most calls in one second", str(sim.get("max_per_second"))),
        ("simulator: answers by status", str(sim.get("statuses"))),
    ]
    return harness.markdown_table(["measure (from the first arrival)", "value"], rows)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Arrivals, admitted, stored, emails sent and NIKs checked over time."""
    figure, axes = harness.new_figure(8.0, 4.5)
    timeline = summary["timeline"]
    times = [point[0] for point in timeline]
    for column, label, style in ((ARRIVED, "arrivals (schedule)", ":"),
                                 (ADMITTED, "admitted (stored + queued)", "--"),
                                 (STORED, "stored", "-"), (EMAILS, "email sent", "-"),
                                 (NIKS, "NIK checked", "-")):
        axes.plot(times, [point[1 + column] for point in timeline], style, label=label)
    if times and times[-1] > STORED_GOAL_SECONDS / 2:  # else the goal squeezes a tiny run
        axes.axvline(STORED_GOAL_SECONDS, color="red", linewidth=0.8, label="stored goal (90 s)")
    axes.set_xlabel("seconds since the first arrival")
    axes.set_ylabel("registrations")
    axes.set_title(f"{summary['count']:,} registrations arriving over "
                   f"{summary['arrival_seconds']:.0f} s")
    axes.legend(fontsize=8)
    harness.save_figure(figure, path)


def main(argv: list[str] | None = None) -> int:
    """Run the wave suite and write results.json, results.md and a PNG."""
    args = parse(argv)
    # A SIGTERM (a stopped `gelombang bench`) unwinds through the finally below, so the
    # stack it started is stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run = harness.BenchRun("wave", args.out, size="tiny" if args.tiny else "full")
    root = Path(tempfile.mkdtemp(prefix="gelombang-bench-wave-"))
    stack = DrillStack(root / "stack", "always", overrides(args, root))
    try:
        run.progress("starting the stack (Redis, PostgreSQL, migrate, mail sink, NIK "
                     "simulator, three workers, the door) ...")
        settings = stack.start()
        run.progress(f"the wave: {args.count:,} applicants over {args.arrival_seconds:.0f} s")
        sending, timeline = wave(args, stack, settings, run)
        sim = verification.sim_stats(settings)
        decisions = door_decisions(settings)
    finally:
        stack.close(keep=True)
        for log in (root / "stack" / "logs").glob("*.log"):
            shutil.copy(log, run.folder / log.name)
        stack.close()
        shutil.rmtree(root, ignore_errors=True)  # 80,000 .eml files
    summary = summarise(args, sending, timeline, sim) | {"door_decisions": decisions}
    stored = summary["all_stored_s"]
    run.record("wave", 1, {"count": args.count}, admitted=summary["admitted"],
               refused_answers=summary["refused_answers"],
               retried_applicants=summary["retried_applicants"],
               **{name: summary[name] for name in ("all_stored_s", "all_emails_s",
                                                   "all_nik_checked_s") if summary[name]})
    run.target("all stored, seconds from the wave's start",
               stored if stored is not None else float("inf"), STORED_GOAL_SECONDS, "lower",
               " s")
    plot(summary, run.plot_path("wave"))
    failures = check(summary)
    notes = ["One round (a full wave takes minutes). Everything, the HTTP client included, "
             "ran on this one machine; checks: "
             + ("all passed" if not failures else "; ".join(failures)) + "."]
    run.finish(summary | {"failures": failures}, table(summary), notes=notes,
               parameters={"count": args.count, "arrival_seconds": args.arrival_seconds,
                           "admission_rate": args.admission_rate,
                           "nik_capacity": args.nik_capacity, "email_rate": args.email_rate})
    return harness.print_results(run.folder, failures)


if __name__ == "__main__":
    sys.exit(main())
