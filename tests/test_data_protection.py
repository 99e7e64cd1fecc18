"""No personal data in the clear anywhere the system keeps or writes things: a small
surge through the real door processes, the drain and both verification workers, then
a scan of all of Redis (keys, values and the append-only file), every table of
PostgreSQL and every log line. One hit fails. Failures report counts, never values."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from gelombang.services import start_redis
from tests.intake.door_helpers import with_admission
from tests.pii import files_text, hit_kinds, hits, postgres_dump, redis_full_dump, shaped_hits
from tests.support import (
    MIN_SEARCHED_BYTES,
    door_processes,
    leaked_kinds,
    national_number,
    run_load,
)
from tests.workers.drain_helpers import drain_settings, running_drain, wait_drained
from tests.workers.verification_helpers import (
    email_settings,
    eventually,
    mail_sink,
    nik_settings,
    nik_simulator,
    running_email_worker,
    running_nik_worker,
)

pytestmark = pytest.mark.slow


async def verified_everywhere(pg: asyncpg.Connection, accepted: int) -> bool:
    done = await pg.fetchval(
        "SELECT count(*) FROM registrations WHERE email_verification <> 'pending'"
        " AND nik_verification <> 'pending'")
    return bool(done == accepted)


async def test_no_plaintext_personal_data_in_redis_postgres_or_logs(
    test_settings: Settings, pg: asyncpg.Connection, tmp_path: Path, run_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # production's level; DEBUG is not for production
    # A Redis of its own, so its append-only file holds this test's writes only.
    redis_server = start_redis(tmp_path / "redis", log_file=tmp_path / "logs" / "redis.log")
    redis = Redis.from_url(redis_server.url)
    try:
        settings = with_admission(test_settings.model_copy(update={
            "redis": test_settings.redis.model_copy(update={"url": redis_server.url})}),
            rate_per_second=150.0, burst=100)
        async with mail_sink(tmp_path / "mail") as (_, smtp_port), \
                nik_simulator(settings) as simulator:
            settings = nik_settings(email_settings(drain_settings(settings), smtp_port),
                                    simulator.url)
            with door_processes(settings, tmp_path, processes=2) as doors:
                surge = await run_load(doors.url, concurrency=8, duration=2.0)
                accepted = surge.statuses[202]
                # While queued, the streams hold every envelope; once drained and
                # verified, what is left in Redis (jobs, markers) is small.
                queued_dump = await redis_full_dump(redis)
                async with running_drain(settings), running_email_worker(settings), \
                        running_nik_worker(settings):
                    await wait_drained(redis, settings)
                    await eventually(lambda: verified_everywhere(pg, accepted), within=60.0,
                                     what="every registration verified")
                door_log = doors.log_text().encode()
            people = surge.sent
            assert accepted >= 100 and await pg.fetchval(
                "SELECT count(*) FROM registrations") == accepted

            redis_dump = queued_dump + await redis_full_dump(redis)
            # Every write ever made (appendfsync always), deleted stream entries included.
            append_only = files_text((tmp_path / "redis").rglob("appendonly*"))
            pg_dump, tables = await postgres_dump(pg)
            in_process_log = "\n".join(record.getMessage() for record in caplog.records)
            log_files = files_text([*(tmp_path / "logs").glob("*.log"),
                                    *(run_dir / "logs").glob("*.log")])
    finally:
        await redis.aclose()
        redis_server.stop()

    # The haystacks really hold the data, sealed: a scan of nothing would pass anything.
    assert len(queued_dump) > accepted * 100 and len(append_only) > accepted * 100
    assert tables >= 8 and len(pg_dump) > accepted * 100
    assert b"door process 1 listening" in door_log and caplog.records
    # One hit fails: counts and places only, never the values.
    found = {
        "redis keys and values": hit_kinds(redis_dump, people),
        "redis append-only file": hit_kinds(append_only, people),
        "postgresql tables": hit_kinds(pg_dump, people),
        "door processes' log": hit_kinds(door_log, people),
        "in-process log records": hit_kinds(in_process_log.encode(), people),
        "server log files": hit_kinds(log_files, people),
    }
    # By place and kind ("name (4 bytes)": 2), never the values.
    assert found == {place: {} for place in found}
    shaped = shaped_hits(door_log + in_process_log.encode() + log_files)
    assert shaped == {"nik": 0, "phone": 0, "email": 0}


def test_the_scanners_find_a_single_planted_value() -> None:
    # The positive control of the scans above, on each form the data could take.
    from loadtest.registrants import RegistrantFactory

    factory = RegistrantFactory()
    person = factory.make()
    while len(person.full_name.encode()) < MIN_SEARCHED_BYTES:
        person = factory.make()
    clean = b"sealed \x00\x01 blob and ids 0190f3c2-7b1e-7c3a-9d2e-4f5a6b7c8d9e"
    assert hits(clean, [person]) == 0
    for planted in (person.nik.encode(), person.full_name.encode(),
                    person.email.upper().lower().encode(), national_number(person.phone).encode(),
                    person.full_name.encode().hex().encode()):
        assert hits(clean + planted, [person]) >= 1
    assert shaped_hits(clean) == {"nik": 0, "phone": 0, "email": 0}
    assert shaped_hits(b"x " + person.nik.encode() + b" " + person.phone.encode() + b" "
                       + person.email.encode()) == {"nik": 1, "phone": 1, "email": 1}


def test_the_log_guard_names_a_file_with_a_hit(tmp_path: Path) -> None:
    from loadtest.registrants import RegistrantFactory
    from tests.pii_guard import scan_logs

    person = RegistrantFactory().make()
    # Not named *.log: the session's own scan of this folder must not see the plant.
    (tmp_path / "clean.planted").write_text("door process 0 listening on 127.0.0.1:8080\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "worker.planted").write_text(f"stored nik {person.nik}\n")
    assert scan_logs([tmp_path], "*.planted") == {"sub/worker.planted": {"nik (line 1)": 1}}


def test_names_too_short_to_tell_from_chance_are_not_searched() -> None:
    from loadtest.registrants import RegistrantFactory

    person = dataclasses.replace(RegistrantFactory().make(), full_name="Adi")
    assert hits(b"\x07Adi\x00 ciphertext", [person]) == 0  # three random bytes could be that
    assert hits(person.nik.encode(), [person]) == 1  # the person is still searched for


def test_the_search_finds_a_phone_in_any_form_and_not_in_millisecond_times() -> None:
    from loadtest.registrants import RegistrantFactory

    person = RegistrantFactory(seed=5).make()
    national = national_number(person.phone)
    assert national.startswith("8") and 10 <= len(national) <= 12
    for form in ("0", "62", "+62"):
        found = leaked_kinds(f'{{"phone": "{form}{national}"}}'.encode(), [person])
        assert found == {"phone (national number)": 1}, form
    # Stream entry ids and lease epochs: 13-digit times, one holding the phone's last
    # 9 digits (the old search's false alarm).
    times = b"\n".join(b"17650%s-0" % national[-9:].encode() + b"\n1765045573%03d-1" % n
                       for n in range(1000))
    assert leaked_kinds(times, [person]) == {}
