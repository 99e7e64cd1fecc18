"""Wave suite: the 2020 opening wave end to end, through the door, with the whole stack.

    python -m benchmarks wave [--count 80000] [--arrival-seconds 60] [--nik-capacity 500]
                              [--email-rate 10000] [--out DIR] [--tiny]

The whole stack on this one machine, started by the dev stack's own
supervisor (`loadtest.drills.stack.DrillStack`, as the fault drills): Redis
(AOF, appendfsync always), PostgreSQL (fsync on), `gelombang migrate`, the
door (`gelombang serve`, the deployment's admission settings: 1,500/s,
burst 3,000), `worker store`, `worker email` → `mail-sink`, `worker nik` →
`nik-sim` at `--nik-capacity` requests/s (the verification suite's settings:
`benchmarks.verification.verification_overrides`).

`--count` applicants, people the simulator's population knows, arrive
evenly over `--arrival-seconds` (80,000 in 60 s: 1,333/s) and POST
/v1/registrations over HTTP, each with its own Idempotency-Key; a 429 or
503 is tried again after its Retry-After (at most 2 s, with jitter), a
broken connection after a pause, with the same key, so nothing is lost and
nothing is stored twice (`loadtest.drills.traffic.Surge`, the drills'
surge). The clock starts at the first arrival. Progress is sampled from
PostgreSQL every second: when every registration was stored (goal: 90 s),
sent its email, and had its NIK checked; what the simulator saw.

One round: a full wave takes about six minutes, most of it the NIK checks
at 500/s. `--tiny` (300 applicants over 3 s) checks the harness and
measures nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Final

from benchmarks import harness, verification
from config.settings import Settings
from gelombang.processes import free_port
from loadtest.drills.stack import DrillStack
from loadtest.drills.traffic import Applicant, Surge, SurgeRecord
from loadtest.registrants import RegistrantFactory

# The goal: every registration of the wave stored this soon after its start.
STORED_GOAL_SECONDS: Final = 90.0
# An applicant keeps retrying this long (a saturated door may refuse for a while).
PATIENCE_SECONDS: Final = 600.0
TINY: Final = {"count": 300, "arrival_seconds": 3.0}
# Timeline columns after the time: stored, emails done, NIK checks done, arrived, admitted.
STORED, EMAILS, NIKS, ARRIVED, ADMITTED = range(5)
Point = tuple[float, int, int, int, int, int]


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks wave",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=80_000)
    parser.add_argument("--arrival-seconds", type=float, default=60.0)
    parser.add_argument("--nik-capacity", type=float, default=500.0,
                        help="the simulator's capacity, and the workers' shared NIK rate")
    parser.add_argument("--email-rate", type=float, default=10_000.0,
                        help="the email workers' shared rate limit (a real relay's is lower)")
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
    return {"public": {"port": public, "base_url": f"http://127.0.0.1:{public}"},
            "admin": {"port": admin},
            **verification.verification_overrides(args.nik_capacity, args.email_rate,
                                                   root / "mail")}


def applicants(settings: Settings, count: int) -> list[Applicant]:
    """People the simulator knows, each with an Idempotency-Key of their own."""
    factory = RegistrantFactory(seed=2020)
    sim = settings.nik_sim
    return [Applicant(factory.citizen(sim.population_seed, sim.existing_share),
                      str(uuid.uuid4())) for _ in range(count)]


async def sample(dsn: str, surge: Surge, started: float, timeline: list[Point],
                 run: harness.BenchRun) -> None:
    """Progress every second (PostgreSQL and the surge) until cancelled."""
    while True:
        counts = await verification.progress(dsn)
        elapsed = time.monotonic() - started
        timeline.append((round(elapsed, 2), *counts, surge.sent,
                         surge.record.statuses.get(202, 0)))
        if len(timeline) % 10 == 1:
            run.progress(f"{elapsed:6.1f} s: arrived {surge.sent:,}, admitted "
                         f"{timeline[-1][1 + ADMITTED]:,}, stored {counts[0]:,}, "
                         f"emails {counts[1]:,}, NIK checks {counts[2]:,}")
        await asyncio.sleep(max(0.0, started + len(timeline) - time.monotonic()))


async def wave(args: argparse.Namespace, stack: DrillStack, settings: Settings,
               run: harness.BenchRun) -> tuple[SurgeRecord, list[Point], float]:
    """Send the wave; sample until all are stored, emailed and checked (or the timeout)."""
    surge = Surge(f"http://127.0.0.1:{settings.public.port}", 0,
                  args.count / args.arrival_seconds, PATIENCE_SECONDS, seed=2020)
    surge.record = SurgeRecord(applicants(settings, args.count))
    timeline: list[Point] = []
    started = time.monotonic()
    sampler = asyncio.create_task(sample(settings.postgres.dsn, surge, started, timeline, run))
    record = await surge.run()
    sent_seconds = time.monotonic() - started
    run.progress(f"every applicant answered after {sent_seconds:.1f} s: {dict(record.statuses)}")
    try:
        while not timeline or min(timeline[-1][1:4]) < args.count:
            if time.monotonic() - started > args.timeout:
                raise RuntimeError(f"not done within {args.timeout:.0f} s: {timeline[-1]}")
            for name in ("door", "worker-store", "worker-email", "worker-nik", "nik-sim",
                         "mail-sink"):
                stack.pid(name)  # LookupError: a process of the stack died
            await asyncio.sleep(1.0)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    return record, timeline, sent_seconds


def first(timeline: list[Point], column: int, total: int) -> float | None:
    """When a column of the timeline first reached `total` (seconds since the wave began)."""
    return next((point[0] for point in timeline if point[1 + column] >= total), None)


def summarise(args: argparse.Namespace, record: SurgeRecord, timeline: list[Point],
              sent_seconds: float, sim: dict[str, Any]) -> dict[str, Any]:
    """The figures of the run, from the surge's record and the timeline."""
    tries = Counter(len(applicant.statuses) for applicant in record.applicants)
    admitted = len(record.accepted)
    return {
        "count": args.count, "arrival_seconds": args.arrival_seconds,
        "arrival_rate": args.count / args.arrival_seconds, "nik_capacity": args.nik_capacity,
        "email_rate_limit": args.email_rate,
        "all_stored_s": first(timeline, STORED, args.count),
        "all_emails_s": first(timeline, EMAILS, args.count),
        "all_nik_checked_s": first(timeline, NIKS, args.count),
        "last_answer_s": sent_seconds,
        "admitted": admitted,
        "refused_answers": record.statuses.get(429, 0) + record.statuses.get(503, 0),
        "answers_429": record.statuses.get(429, 0), "answers_503": record.statuses.get(503, 0),
        "retried_applicants": sum(n for count, n in tries.items() if count > 1),
        "most_tries": max(tries, default=0),
        "connection_errors": record.connection_errors, "hangs": record.hangs,
        "gave_up": record.gave_up, "unexpected_answers": record.unexpected,
        "without_retry_after": record.without_retry_after,
        "stored": timeline[-1][1 + STORED] if timeline else 0,
        "statuses": {str(status): n for status, n in sorted(record.statuses.items())},
        "simulator": sim,
        "timeline": [list(point) for point in timeline],
    }


def check(summary: dict[str, Any]) -> list[str]:
    """What went wrong: a registration lost or refused for good, or an answer off contract."""
    count = summary["count"]
    wrong = [f"{name}: {summary[name]}, expected {value}"
             for name, value in (("admitted", count), ("stored", count), ("gave_up", 0),
                                 ("unexpected_answers", 0), ("without_retry_after", 0))
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
        ("applicants who retried", f"{summary['retried_applicants']:,} "
         f"(most tries {summary['most_tries']})"),
        ("connection errors / hangs / gave up", f"{summary['connection_errors']} / "
         f"{summary['hangs']} / {summary['gave_up']}"),
        ("last applicant answered", seconds(summary["last_answer_s"])),
        ("all stored", seconds(summary["all_stored_s"])),
        ("all verification emails sent", seconds(summary["all_emails_s"])),
        (f"all NIKs checked (simulator at {summary['nik_capacity']:.0f}/s)",
         seconds(summary["all_nik_checked_s"])),
        ("simulator: most calls in one second", str(sim.get("max_per_second"))),
        ("simulator: answers by status", str(sim.get("statuses"))),
    ]
    return harness.markdown_table(["measure (from the first arrival)", "value"], rows)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Arrivals, admitted, stored, emails sent and NIKs checked over time."""
    figure, axes = harness.new_figure(8.0, 4.5)
    timeline = summary["timeline"]
    times = [point[0] for point in timeline]
    for column, label, style in ((ARRIVED, "arrived", ":"), (ADMITTED, "admitted (202)", "--"),
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
    run = harness.BenchRun("wave", args.out, size="tiny" if args.tiny else "full")
    root = Path(tempfile.mkdtemp(prefix="gelombang-bench-wave-"))
    stack = DrillStack(root / "stack", "always", overrides(args, root))
    try:
        run.progress("starting the stack (Redis, PostgreSQL, migrate, mail sink, NIK "
                     "simulator, three workers, the door) ...")
        settings = stack.start()
        run.progress(f"the wave: {args.count:,} applicants over {args.arrival_seconds:.0f} s")
        record, timeline, sent_seconds = asyncio.run(wave(args, stack, settings, run))
        sim = verification.sim_stats(settings)
    finally:
        stack.close(keep=True)
        for log in (root / "stack" / "logs").glob("*.log"):
            shutil.copy(log, run.folder / log.name)
        stack.close()
        shutil.rmtree(root, ignore_errors=True)  # 80,000 .eml files
    summary = summarise(args, record, timeline, sent_seconds, sim)
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
                           "nik_capacity": args.nik_capacity, "email_rate": args.email_rate})
    print((run.folder / "results.md").read_text())
    print(f"results in {run.folder}")
    for failure in failures:
        print(f"CHECK FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
