"""`logging.format = "json"`: one JSON object per line from every process, no personal data."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from config.log_format import JsonFormatter
from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from queueing.redis_client import RedisClient
from tests.pii import hit_kinds, shaped_hits
from tests.support import REPO_ROOT, door_processes
from tests.workers.verification_helpers import eventually

FIELDS = {"time", "level", "process", "pid", "logger", "event"}


def _record(message: str, *args: object, exc: BaseException | None = None,
            **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("gelombang.test", logging.WARNING, __file__, 1, message, args,
                               (type(exc), exc, exc.__traceback__) if exc else None)
    record.__dict__.update(extra)
    return record


def test_a_record_is_one_line_with_the_fields_ids_and_no_exception_message() -> None:
    nik = "3201014506990001"
    try:
        raise ValueError(f"bad nik {nik}\nsecond line")
    except ValueError as error:
        caught = error
    line = JsonFormatter("door-0").format(_record(
        "batch of %d refused\nby PostgreSQL", 3, exc=caught,
        ids={"partition": 3, "registration_id": "0190c3a2-7b1d-7c3e-8f00-000000000001"}))
    assert "\n" not in line
    entry = orjson.loads(line)
    assert FIELDS <= set(entry)
    assert (entry["level"], entry["process"], entry["logger"], entry["event"]) == (
        "WARNING", "door-0", "gelombang.test", "batch of 3 refused\nby PostgreSQL")
    assert entry["time"].endswith("+00:00") and entry["pid"] == os.getpid()
    assert entry["ids"] == {"partition": 3,
                            "registration_id": "0190c3a2-7b1d-7c3e-8f00-000000000001"}
    # The exception's type and frames only: its message quoted the NIK.
    assert entry["error"] == "ValueError" and entry["stack"]
    assert nik not in line


def _json_lines(text: str, where: str) -> list[dict[str, Any]]:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            # The line number only: the line itself might be what leaked.
            raise AssertionError(f"{where} line {number} is not JSON") from None
        assert isinstance(entry, dict), f"{where} line {number}"
        assert FIELDS <= set(entry), f"{where} line {number}: {sorted(FIELDS - set(entry))}"
        entries.append(entry)
    return entries


@pytest.mark.slow
async def test_door_supervisor_and_drain_write_only_json_lines_without_personal_data(
    test_settings: Settings, redis_client: RedisClient, pg: asyncpg.Connection,
    registrants: RegistrantFactory, tmp_path: Path,
) -> None:
    settings = test_settings.model_copy(update={
        "logging": test_settings.logging.model_copy(update={"format": "json"})})
    people = [registrants.make() for _ in range(20)]
    worker_log = tmp_path / "worker.log"
    with door_processes(settings, tmp_path, processes=2) as doors:
        env = {**os.environ, "GELOMBANG_CONFIG": str(tmp_path / "door.toml"),
               "PYTHONUNBUFFERED": "1"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with worker_log.open("wb") as out:
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gelombang", "worker", "store", cwd=REPO_ROOT, env=env,
                stdout=out, stderr=asyncio.subprocess.STDOUT)
        try:
            async with aiohttp.ClientSession() as session:
                for person in people:
                    async with session.post(doors.url + "/v1/registrations",
                                            json=person.body()) as reply:
                        assert reply.status == 202

            async def all_stored() -> bool:
                return bool(await pg.fetchval("SELECT count(*) FROM registrations") == len(people))

            await eventually(all_stored, within=30, what="the drain")
            # A door process that dies is restarted: the supervisor logs it, in JSON too.
            pgrep = await asyncio.create_subprocess_exec(
                "pgrep", "-P", str(doors.process.pid), stdout=asyncio.subprocess.PIPE)
            children, _ = await pgrep.communicate()
            os.kill(int(children.split()[0]), signal.SIGKILL)

            async def restarted() -> bool:
                return "restarting" in doors.log_text()

            await eventually(restarted, within=15, what="the restart")
        finally:
            worker.send_signal(signal.SIGTERM)
            await asyncio.wait_for(worker.wait(), 30)
    door_log = doors.log_text()
    worker_text = worker_log.read_text()
    entries = _json_lines(door_log, "door log") + _json_lines(worker_text, "worker log")
    processes = {entry["process"] for entry in entries}
    assert {"door-0", "door-1", "serve", "worker-drain"} <= processes, processes
    assert any(e["event"].startswith("door process 0 listening on") for e in entries)
    raw = (door_log + worker_text).encode()
    assert sum(hit_kinds(raw, people).values()) == 0, hit_kinds(raw, people)
    assert sum(shaped_hits(raw).values()) == 0
