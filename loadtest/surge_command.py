"""`gelombang surge SCENARIO`: replay a registration wave and check nothing was lost.

Runs Locust headless (loadtest/locustfile.py) against the local stack or
`--target`, watches the admin funnel meanwhile, then writes a report folder:
Locust's CSV and HTML, `records/` (what each Locust process saw), `plot.png`
(offered vs admitted vs shed per second; 202 latency p50/p99 over time;
backlog and drain rate over time) and `summary.json`, and prints the
summary. The loss check then asks, for every registration that got a 202,
whether it is stored: in PostgreSQL when the DSN is known, else through the
status endpoint. Exit status 1 when any is missing, or when any 5xx other
than the contract's documented 503s occurred.
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
from urllib.parse import urlsplit

from config.settings import Settings
from loadtest import report
from loadtest.recorder import merge
from loadtest.scenarios import SCENARIOS, Scenario, parse_rate

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
                        help="seconds: the wave's plateau, a step's length (step-ramp), or "
                             "the whole run (soak, retry-storm)")
    parser.add_argument("--ramp", type=float, default=None, help="opening-wave: ramp seconds")
    parser.add_argument("--decay", type=float, default=None, help="opening-wave: decay seconds")
    parser.add_argument("--steps", type=int, default=None, help="step-ramp: number of steps")
    parser.add_argument("--admission-rate", type=float, default=None,
                        help="retry-storm: the admission rate set during the storm")
    parser.add_argument("--per-user-rate", type=float, default=None,
                        help="applications per second per Locust user (default 0.5)")
    parser.add_argument("--verify-share", type=float, default=None,
                        help="share who open their verification link (default 0.7385)")
    parser.add_argument("--target", default=None, help="the door's public URL (default: local)")
    parser.add_argument("--admin-url", default=None, help="the door's admin URL")
    parser.add_argument("--admin-token", default=None, help="default: admin.token")
    parser.add_argument("--dsn", default=None,
                        help="PostgreSQL for the loss check (default: postgres.dsn for a "
                             "local target; none for a remote one: the status endpoint)")
    parser.add_argument("--processes", type=int, default=1,
                        help="Locust processes (-1: one per core); more than one core's "
                             "worth of load needs several")
    parser.add_argument("--settle", type=float, default=180.0,
                        help="seconds to wait for the backlog to drain before the loss check")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default loadtest/reports/<scenario>-<time>)")
    parser.set_defaults(handler=run_surge)


def build_scenario(args: argparse.Namespace) -> Scenario:
    """The scenario with the command line's changes."""
    given = {"rate": args.rate, "duration": args.duration, "ramp": args.ramp,
             "decay": args.decay, "steps": args.steps, "admission_rate": args.admission_rate,
             "per_user_rate": args.per_user_rate, "verify_share": args.verify_share}
    return Scenario(args.scenario, **{k: v for k, v in given.items() if v is not None})


class Endpoints:
    """Where the door is, and what the surge may use besides it."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        local = args.target is None
        self.target = (args.target or f"http://127.0.0.1:{settings.public.port}").rstrip("/")
        self.admin = args.admin_url or (settings.admin.local_url if local else None)
        self.token = args.admin_token or settings.admin.token
        self.dsn = args.dsn or (settings.postgres.dsn if local else None)
        loopback = urlsplit(self.target).hostname in ("127.0.0.1", "localhost", "::1")
        maildir = os.environ.get("GELOMBANG_MAILDIR") or settings.email.maildir
        self.maildir = str(Path(maildir).absolute()) if loopback else None
        sim = settings.nik_sim
        self.citizen = (sim.population_seed, sim.existing_share) if loopback else None

    def admin_call(self, method: str, path: str, body: dict[str, Any] | None = None
                   ) -> dict[str, Any] | None:
        if self.admin is None:
            return None
        request = urllib.request.Request(
            self.admin + path, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                result: dict[str, Any] = json.load(reply)
                return result
        except (OSError, ValueError, urllib.error.HTTPError):
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
    """Run the scenario, then report and check."""
    settings = Settings.load()
    scenario = build_scenario(args)
    endpoints = Endpoints(args, settings)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or REPORTS / f"{scenario.name}-{stamp}"
    records = out / "records"
    records.mkdir(parents=True, exist_ok=True)
    print(f"surge {scenario.name}: {scenario.rate:,.0f}/s ({scenario.rate * 60:,.0f}/min) at "
          f"the plateau, {scenario.total_seconds:.0f} s, against {endpoints.target}", flush=True)
    saved_admission = None
    if scenario.name == "retry-storm":
        saved_admission = endpoints.admin_call("GET", "/admin/v1/admission")
        if saved_admission is None:
            print("retry-storm needs the admin API (--admin-url, --admin-token)", file=sys.stderr)
            return 2
        endpoints.admin_call("PUT", "/admin/v1/admission", {
            "rate_per_second": scenario.admission_rate,
            "burst": max(1, int(scenario.admission_rate))})
    watch = FunnelWatch(endpoints)
    watch.start()
    try:
        code = run_locust(scenario, endpoints, out, records, args.processes)
    finally:
        if saved_admission is not None:
            endpoints.admin_call("PUT", "/admin/v1/admission", {
                key: saved_admission[key] for key in ("rate_per_second", "burst")})
    if code != 0:
        print(f"locust failed (exit status {code}); see {out}/locust.log", file=sys.stderr)
    merged = merge(records)
    settle(endpoints, args.settle)
    watch.stopping.set()
    watch.join(5)
    loss = asyncio.run(loss_check(endpoints, merged.admitted_ids))
    summary = report.summarise(scenario, endpoints.target, merged, loss, watch.samples)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report.plot(out / "plot.png", scenario, merged, watch.samples)
    print(report.render(summary))
    print(f"report: {out}")
    failed = (summary["loss_check"]["missing"] > 0 or summary["unexpected_5xx"] > 0
              or code != 0 or summary["offered"] == 0)
    return 1 if failed else 0


def run_locust(scenario: Scenario, endpoints: Endpoints, out: Path, records: Path,
               processes: int) -> int:
    """Locust headless with the scenario's shape; its exit status."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
               "--host", endpoints.target, "--csv", str(out / "locust"),
               "--html", str(out / "locust.html"), "--loglevel", "WARNING",
               "--stop-timeout", "15", "--exit-code-on-error", "0"]
    if processes != 1:
        command += ["--processes", str(processes)]
    env = {**os.environ, "GELOMBANG_SURGE": scenario.to_env(),
           "GELOMBANG_SURGE_OUT": str(records), "PYTHONUNBUFFERED": "1"}
    if endpoints.maildir:
        env["GELOMBANG_MAILDIR"] = endpoints.maildir
    if endpoints.citizen:
        env["GELOMBANG_SURGE_CITIZEN"] = json.dumps(list(endpoints.citizen))
    with (out / "locust.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.terminate()
            return process.wait()


def settle(endpoints: Endpoints, within: float) -> None:
    """Wait until the backlog is empty (all admitted registrations reached the workers)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        funnel = endpoints.admin_call("GET", "/admin/v1/funnel")
        if funnel is None or int(funnel["queued"]) == 0:
            return
        time.sleep(1.0)


async def loss_check(endpoints: Endpoints, ids: list[str]) -> dict[str, Any]:
    """How many of the 202s are stored, by PostgreSQL or by the status endpoint."""
    unique = sorted(set(ids))
    if endpoints.dsn:
        stored, last = await _stored_in_postgres(endpoints.dsn, unique)
        method = "postgresql"
    else:
        stored, last = await _stored_by_status(endpoints.target, unique), None
        method = "status endpoint"
    return {"method": method, "admitted": len(unique), "stored": stored,
            "missing": len(unique) - stored, "last_stored_at": last,
            "repeated_ids": len(ids) - len(unique)}


async def _stored_in_postgres(dsn: str, ids: list[str]) -> tuple[int, float | None]:
    import uuid

    import asyncpg

    connection = await asyncpg.connect(dsn)
    stored, last = 0, None
    try:
        for start in range(0, len(ids), 10_000):
            chunk = [uuid.UUID(value) for value in ids[start:start + 10_000]]
            row = await connection.fetchrow(
                "SELECT count(*), max(stored_at) FROM registrations "
                "WHERE registration_id = ANY($1::uuid[])", chunk)
            assert row is not None
            stored += int(row[0])
            if row[1] is not None:
                moment = row[1].timestamp()
                last = moment if last is None else max(last, moment)
    finally:
        await connection.close()
    return stored, last


async def _stored_by_status(target: str, ids: list[str]) -> int:
    import aiohttp

    found = 0
    slots = asyncio.Semaphore(32)

    async def check(session: aiohttp.ClientSession, registration_id: str) -> None:
        nonlocal found
        async with slots:
            for _ in range(5):
                async with session.get(f"{target}/v1/registrations/{registration_id}") as reply:
                    if reply.status == 200:
                        # An issued id answers 200 `queued` until it is stored.
                        if (await reply.json()).get("state") != "queued":
                            found += 1
                        return
                    if reply.status == 404:
                        return
                await asyncio.sleep(1.0)  # 503: the store is busy; ask again

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(check(session, rid) for rid in ids))
    return found
