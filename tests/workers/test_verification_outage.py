"""PostgreSQL down under a verification backlog, the workers restarted meanwhile: nothing lost,
nothing sent or asked twice, nothing dead-lettered."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from database.schema import migrate
from gelombang.services import PostgresServer
from loadtest.registrants import RegistrantFactory
from tests.support import REPO_ROOT, write_config
from tests.workers.verification_backlog import stored_backlog
from tests.workers.verification_helpers import (
    dead_jobs,
    email_settings,
    eventually,
    mail_sink,
    nik_settings,
    nik_simulator,
    received_mail,
)

# The drill is 20,000 registrations and 3 minutes; the suite's time
# constants are scaled down (entries reclaimed after 1 s, back-off up to
# 0.2 s), so 5,000 and 12 s exercise the same paths: the outage still comes
# with most of the backlog left (see _some_done), and each worker is restarted
# twice during it. GELOMBANG_OUTAGE_BACKLOG=20000 GELOMBANG_OUTAGE_SECONDS=180
# runs the full drill.
BACKLOG = int(os.environ.get("GELOMBANG_OUTAGE_BACKLOG", "5000"))
OUTAGE_SECONDS = float(os.environ.get("GELOMBANG_OUTAGE_SECONDS", "12"))
RESTARTS = 2


class WorkerProcesses:
    """`gelombang worker email` and `worker nik` as processes, restartable."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        self.config = folder / "workers.toml"
        write_config(settings, self.config, 0, 0)
        self.folder = folder
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.starts = 0

    def start(self, role: str) -> None:
        self.starts += 1
        env = {**os.environ, "GELOMBANG_CONFIG": str(self.config), "PYTHONUNBUFFERED": "1"}
        with (self.folder / f"{role}-{self.starts}.log").open("wb") as log:
            self.running[role] = subprocess.Popen(
                [sys.executable, "-m", "gelombang", "worker", role], cwd=REPO_ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT)

    def stop(self, role: str) -> int:
        process = self.running.pop(role)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return -9

    def restart_all(self) -> list[int]:
        codes = [self.stop(role) for role in ("email", "nik")]
        for role in ("email", "nik"):
            self.start(role)
        return codes

    def logs(self) -> str:
        return "".join(path.read_text() for path in sorted(self.folder.glob("*-*.log")))


@pytest.mark.slow
@pytest.mark.timeout(OUTAGE_SECONDS + 270)  # the outage, then 20,000 emails and NIK checks
async def test_a_postgres_outage_with_restarts_loses_doubles_and_dead_letters_nothing(
        own_postgres: PostgresServer, redis_client: Redis, test_settings: Settings,
        registrants: RegistrantFactory, tmp_path: Path) -> None:
    await migrate(own_postgres.dsn)
    settings = test_settings.model_copy(update={
        "postgres": test_settings.postgres.model_copy(update={"dsn": own_postgres.dsn})})
    pg = await asyncpg.connect(own_postgres.dsn)
    try:
        await stored_backlog(pg, redis_client, settings, registrants, BACKLOG)
    finally:
        await pg.close()
    maildir = tmp_path / "mail"
    async with nik_simulator(settings) as sim, mail_sink(maildir) as (sink, port):
        verifying = email_settings(nik_settings(settings, sim.url), port)
        workers = WorkerProcesses(verifying, tmp_path)
        for role in ("email", "nik"):
            workers.start(role)
        try:
            await eventually(lambda: _some_done(sink.received, sim), within=30,
                             what="verification under way")
            await asyncio.to_thread(own_postgres.stop, "fast")
            outage_started = time.monotonic()
            # The outage must meet a backlog, or it tests nothing.
            assert sink.received < BACKLOG // 2
            codes = []
            for restart in range(1, RESTARTS + 1):
                await asyncio.sleep(OUTAGE_SECONDS * restart / (RESTARTS + 1)
                                    - (time.monotonic() - outage_started))
                codes += await asyncio.to_thread(workers.restart_all)
            await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
            await asyncio.to_thread(own_postgres.start)
            await eventually(lambda: _all_final(own_postgres.dsn), within=180,
                             what="every registration verified")
        finally:
            for role in list(workers.running):
                codes_at_end = workers.stop(role)
                assert codes_at_end == 0
        stats = await sim.stats()
        received = sink.received
    assert codes == [0] * (2 * RESTARTS)  # every SIGTERM during the outage: a clean stop
    assert not await dead_jobs(redis_client, settings)
    mailed = collections.Counter(mail.registration_id for mail in received_mail(maildir))
    assert received == BACKLOG and len(mailed) == BACKLOG
    assert set(mailed.values()) == {1}  # exactly one email per registration
    assert stats["answered_again"] == 0  # no NIK asked twice
    assert sum(stats["results"].values()) == BACKLOG  # one answer each (a 429 is no answer)
    logs = workers.logs()
    assert "Traceback" not in logs


async def _some_done(mails: int, sim: object) -> bool:
    return mails > 100


async def _all_final(dsn: str) -> bool:
    try:
        connection = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        pending = await connection.fetchval(
            "SELECT count(*) FROM registrations"
            " WHERE email_verification = 'pending' OR nik_verification = 'pending'")
        return bool(pending == 0)
    finally:
        await connection.close()
