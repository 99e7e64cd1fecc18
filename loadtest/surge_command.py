"""`gelombang surge SCENARIO`: replay a registration wave, check nothing was lost, judge it.

Finds the dev stack's config when none is named and asks the door, the
admin API and PostgreSQL before any load (`loadtest/preflight.py`: exit
status 3 and one line when one does not answer). Then runs Locust headless
(loadtest/locustfile.py; `--workers N`: a master and N worker processes)
against the local stack or `--target`, prints a progress line every few
seconds, watches the admin funnel meanwhile, and writes a report folder:
Locust's CSV and HTML, `records/run.json` (what every Locust process saw),
`plot.png` (offered vs admitted vs shed per second; 202 latency p50/p99 over
time; backlog and drain rate over time) and `summary.json`, and prints the
summary. The loss check then asks, for every registration that got a 202,
whether it is stored: in PostgreSQL when the DSN is known, else through the
status endpoint. Last, the run is judged against the scenario's thresholds
(`loadtest/thresholds.py`): exit status 1 and one line of reasons when it
fails. `opening-crush` (the waiting room, issue 18) also schedules its wave
and sets its admission rate first, reads the door's counters before and
after (`loadtest/crush.py`), and judges fairness (`loadtest/fairness.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

from config.settings import ConfigError, Settings
from gelombang.cli import EXIT_STARTUP_FAILURE
from loadtest import crush, preflight, report, thresholds
from loadtest.loss_check import loss_check
from loadtest.recorder import PROGRESS_PREFIX, merge
from loadtest.scenarios import CRUSH_REGISTRANTS, SCENARIOS, Scenario, parse_rate

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
LOCUSTFILE: Final = Path(__file__).with_name("locustfile.py")
REPORTS: Final = REPO_ROOT / "loadtest" / "reports"


def register(subparsers: Any) -> None:
    """Add the `surge` subcommand."""
    parser = subparsers.add_parser("surge", help="replay a registration wave with Locust (QA)")
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--rate", type=parse_rate, default=None,
                        help="arrivals at the plateau: 1333, 1333/s or 80000/min "
                             "(default 80000/min)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds: the wave's plateau, a step's length (step-ramp), "
                             "the whole run (soak, retry-storm), or the arrivals' window "
                             "(opening-crush, default 120)")
    parser.add_argument("--ramp", type=float, default=None, help="opening-wave: ramp seconds")
    parser.add_argument("--decay", type=float, default=None, help="opening-wave: decay seconds")
    parser.add_argument("--steps", type=int, default=None, help="step-ramp: number of steps")
    parser.add_argument("--admission-rate", type=float, default=None,
                        help="retry-storm: the admission rate set during the storm "
                             "(default 50); opening-crush: the line's release rate "
                             "(default N/200)")
    parser.add_argument("--registrants", type=int, default=None, metavar="N",
                        help=f"opening-crush: registrants arriving over --duration "
                             f"(default {CRUSH_REGISTRANTS:,}; 2 minutes)")
    parser.add_argument("--opens-after", type=float, default=None,
                        help="opening-crush: seconds of pre-queue before the opening "
                             "(default 60)")
    parser.add_argument("--tabs-share", type=float, default=None,
                        help="opening-crush: share of registrants with three tabs "
                             "(default 0.05)")
    parser.add_argument("--wave", default=None,
                        help="opening-crush: the wave's name (default crush-<UTC time>)")
    parser.add_argument("--per-user-rate", type=float, default=None,
                        help="applications per second per Locust user (default 0.5)")
    parser.add_argument("--verify-share", type=float, default=None,
                        help="share who open their verification link (default 0.7385)")
    parser.add_argument("--page-seconds", type=float, default=None,
                        help="how long an applicant keeps the form open, retrying and "
                             "polling its status (default 20; opening-crush: the pre-queue "
                             "and twice the line's length, plus 120)")
    parser.add_argument("--max-in-flight", type=int, default=None,
                        help="applicants in flight per Locust process (default 20000); an "
                             "arrival beyond it is not offered")
    parser.add_argument("--min-arrival-share", type=float, default=None,
                        help="fail below this share of the planned arrivals (default 0.95)")
    parser.add_argument("--p99-budget", type=float, default=None, metavar="MS",
                        help="fail when the p99 of 202 answers is above this (default "
                             "1000 ms; step-ramp 2000 ms)")
    parser.add_argument("--target", default=None, help="the door's public URL (default: local)")
    parser.add_argument("--admin-url", default=None, help="the door's admin URL")
    parser.add_argument("--admin-token", default=None, help="default: admin.token")
    parser.add_argument("--dsn", default=None,
                        help="PostgreSQL for the loss check (default: postgres.dsn for a "
                             "local target; none for a remote one: the status endpoint)")
    parser.add_argument("--workers", type=int, default=0,
                        help="Locust worker processes under one master (-1: one per core; "
                             "default 0: one process, no master); one process drives "
                             "about one core's worth of load")
    parser.add_argument("--settle", type=float, default=180.0,
                        help="seconds to wait for the backlog to drain before the loss check")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default loadtest/reports/<scenario>-<time>)")
    parser.set_defaults(handler=run_surge)


def build_scenario(args: argparse.Namespace) -> Scenario:
    """The scenario with the command line's changes."""
    if args.scenario == "opening-crush":
        return _crush_scenario(args)
    given = {"rate": args.rate, "duration": args.duration, "ramp": args.ramp,
             "decay": args.decay, "steps": args.steps, "admission_rate": args.admission_rate,
             "per_user_rate": args.per_user_rate, "verify_share": args.verify_share,
             "page_seconds": args.page_seconds, "max_in_flight": args.max_in_flight}
    return Scenario(args.scenario, **{k: v for k, v in given.items() if v is not None})


def _crush_scenario(args: argparse.Namespace) -> Scenario:
    """opening-crush from N: its rate is N over the arrival window, not --rate."""
    if args.rate is not None:
        raise ValueError("opening-crush takes --registrants N (arriving over --duration), "
                         "not --rate")
    given = {"duration": args.duration, "opens_after": args.opens_after,
             "admission_rate": args.admission_rate, "page_seconds": args.page_seconds,
             "max_in_flight": args.max_in_flight, "tabs_share": args.tabs_share,
             "per_user_rate": args.per_user_rate}
    return Scenario.opening_crush(args.registrants or CRUSH_REGISTRANTS,
                                  **{k: v for k, v in given.items() if v is not None})


class Endpoints:
    """Where the door is, and what the surge may use besides it."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        local = args.target is None
        self.target = (args.target or f"http://127.0.0.1:{settings.public.port}").rstrip("/")
        self.admin = args.admin_url or (settings.admin.local_url if local else None)
        self.token = args.admin_token or settings.admin.token
        self.dsn = args.dsn or (settings.postgres.dsn if local else None)
        loopback = preflight.is_loopback(self.target)
        maildir = os.environ.get("GELOMBANG_MAILDIR") or settings.email.maildir
        self.maildir = str(Path(maildir).absolute()) if loopback else None
        sim = settings.nik_sim
        self.citizen = (sim.population_seed, sim.existing_share) if loopback else None

    def admin_call(self, method: str, path: str, body: dict[str, Any] | None = None
                   ) -> dict[str, Any] | None:
        """The JSON object of a 2xx answer; None for anything else."""
        status, answer = self.admin_request(method, path, body)
        return answer if 200 <= status < 300 and isinstance(answer, dict) else None

    def admin_request(self, method: str, path: str, body: dict[str, Any] | None = None
                      ) -> tuple[int, Any]:
        """The status and JSON body of an admin call (0 and None: no answer)."""
        if self.admin is None:
            return 0, None
        request = urllib.request.Request(
            self.admin + path, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return reply.status, _json_or_none(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json_or_none(exc.read())
        except (OSError, ValueError):
            return 0, None


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


class FunnelWatch(threading.Thread):
    """Samples the admin funnel every second: backlog and stored over time."""

    def __init__(self, endpoints: Endpoints) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.samples: list[tuple[float, int, int]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            funnel = self.endpoints.admin_call("GET", "/admin/v1/funnel")
            if funnel is not None:
                self.samples.append((time.time(), int(funnel["queued"]), int(funnel["stored"])))
            self.stopping.wait(1.0)


def run_surge(args: argparse.Namespace) -> int:
    """Check, run the scenario, then report and judge; one line, never a traceback."""
    try:
        return _run(args)
    except preflight.SurgeCannotStart as exc:
        print(f"gelombang surge: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILURE
    except ConfigError:
        raise  # gelombang's own line and exit status (gelombang/cli.py)
    except KeyboardInterrupt:
        print("gelombang surge: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # Anything else, on one line. This process never holds a request body
        # (the applicants live in Locust's processes), so no personal data.
        print(f"gelombang surge: failed: {type(exc).__name__}: {preflight.reason(exc)}",
              file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    found = preflight.discover_config(args.target)
    settings = Settings.load()
    scenario = build_scenario(args)
    marks = thresholds.for_scenario(scenario.name, args.min_arrival_share, args.p99_budget)
    endpoints = Endpoints(args, settings)
    if found is not None:
        print(f"config: {found} (the dev stack's; GELOMBANG_CONFIG names another)", flush=True)
    check_dependencies(scenario, endpoints)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or REPORTS / f"{scenario.name}-{stamp}"
    records = out / "records"
    records.mkdir(parents=True, exist_ok=True)
    print(f"surge {scenario.name}: {scenario.rate:,.0f}/s ({scenario.rate * 60:,.0f}/min) at "
          f"the plateau, {scenario.planned_arrivals():,.0f} arrivals in "
          f"{scenario.total_seconds:.0f} s, against {endpoints.target}", flush=True)
    saved_admission = _read_admission(scenario, endpoints)
    wave: crush.Wave | None = None
    before: crush.DoorReading | None = None
    watch = FunnelWatch(endpoints)
    try:
        if scenario.name == "retry-storm":
            endpoints.admin_call("PUT", "/admin/v1/admission", {
                "rate_per_second": scenario.admission_rate,
                "burst": max(1, int(scenario.admission_rate))})
        elif scenario.name == "opening-crush":
            wave = crush.plan_wave(scenario, time.time(), args.wave)
            scenario = crush.set_up(endpoints, scenario, wave)
            print(_wave_line(scenario, wave), flush=True)
            before = crush.read_door(endpoints)
        watch.start()
        code = run_locust(scenario, endpoints, out, records, args.workers)
    finally:
        if saved_admission is not None:
            endpoints.admin_call("PUT", "/admin/v1/admission", {
                key: saved_admission[key] for key in ("rate_per_second", "burst")})
    merged = merge(records)
    settle(endpoints, args.settle)
    watch.stopping.set()
    watch.join(5)
    # In the waiting room a tab may learn its registration from a 409 `ticket_used`
    # or a `registered` ticket alone (its own 202 lost on the way): stored all the same.
    learnt = {rid for j in merged.journeys for rid in j["registration_ids"]}
    loss = asyncio.run(loss_check(endpoints.dsn, endpoints.target, merged.admitted_ids
                                  + sorted(learnt - set(merged.admitted_ids))))
    summary = report.summarise(scenario, endpoints.target, merged, loss, watch.samples)
    if wave is not None and before is not None:
        door = crush.door_figures(before, crush.read_door(endpoints), merged.total("queue_polls"))
        summary["crush"] = report.crush_summary(scenario, merged, wave.as_dict(), door)
    reasons = thresholds.failures(summary, marks, code)
    summary["thresholds"] = thresholds.as_dict(marks, scenario.name)
    summary["passed"], summary["failures"] = not reasons, reasons
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report.plot(out / "plot.png", scenario, merged, watch.samples)
    print(report.render(summary))
    print(f"report: {out}")
    print(thresholds.verdict_line(summary, marks, reasons), flush=True)
    return 1 if reasons else 0


def _read_admission(scenario: Scenario, endpoints: Endpoints) -> dict[str, Any] | None:
    """The admission settings to put back after a scenario that changes them."""
    if scenario.name not in ("retry-storm", "opening-crush"):
        return None
    saved = endpoints.admin_call("GET", "/admin/v1/admission")
    if saved is None:
        raise preflight.SurgeCannotStart(
            f"{scenario.name} could not read the admission settings at {endpoints.admin}")
    return saved


def _wave_line(scenario: Scenario, wave: crush.Wave) -> str:
    def clock(at: int) -> str:
        return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%H:%M:%SZ")

    return (f"wave {wave.name}: pre-queue from {clock(wave.prequeue_from)}, opens "
            f"{clock(wave.opens_at)}, joining closes {clock(wave.closes_at)}; admission "
            f"{scenario.admission_rate:,.1f}/s; {scenario.registrants:,} registrants over "
            f"{scenario.duration:.0f} s, {scenario.tabs_share:.0%} with three tabs")


def check_dependencies(scenario: Scenario, endpoints: Endpoints) -> None:
    """Every dependency answers before the load starts (preflight's one-line errors)."""
    preflight.check_door(endpoints.target)
    if endpoints.admin is not None:
        preflight.check_admin(endpoints.admin, endpoints.token)
    elif scenario.name in ("retry-storm", "opening-crush"):
        raise preflight.SurgeCannotStart(
            f"{scenario.name} sets the admission rate through the admin API: pass "
            "--admin-url and --admin-token")
    if endpoints.dsn is not None:
        preflight.check_postgres(endpoints.dsn)


def run_locust(scenario: Scenario, endpoints: Endpoints, out: Path, records: Path,
               workers: int) -> int:
    """Locust headless with the scenario's shape; its exit status."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
               "--host", endpoints.target, "--csv", str(out / "locust"),
               "--html", str(out / "locust.html"), "--loglevel", "WARNING",
               "--exit-code-on-error", "0"]
    if workers != 0:
        # Locust's all-in-one distributed mode: this process becomes the master,
        # forks the workers and waits for all of them before the first user.
        command += ["--processes", str(workers)]
    env = {**os.environ, "GELOMBANG_SURGE": scenario.to_env(),
           "GELOMBANG_SURGE_OUT": str(records), "PYTHONUNBUFFERED": "1"}
    if endpoints.maildir:
        env["GELOMBANG_MAILDIR"] = endpoints.maildir
    if endpoints.citizen:
        env["GELOMBANG_SURGE_CITIZEN"] = json.dumps(list(endpoints.citizen))
    with (out / "locust.log").open("w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace")
        assert process.stdout is not None
        try:
            # Everything to locust.log; the master's progress lines to the terminal too.
            for line in process.stdout:
                log.write(line)
                if line.startswith(PROGRESS_PREFIX):
                    print("progress  " + line[len(PROGRESS_PREFIX):].rstrip(), flush=True)
            return process.wait()
        except KeyboardInterrupt:
            process.terminate()
            process.wait()
            raise


def settle(endpoints: Endpoints, within: float) -> None:
    """Wait until the backlog is empty (all admitted registrations reached the workers)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        funnel = endpoints.admin_call("GET", "/admin/v1/funnel")
        if funnel is None or int(funnel["queued"]) == 0:
            return
        time.sleep(1.0)
