"""The NIK simulator: its synthetic population, its API under load and failure, its command.

NIKs and names here are synthetic, yet no assertion quotes one: a failing
test prints booleans and counts only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import os
import random
import signal
import subprocess
import sys
import threading
import time
import unicodedata
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config.settings import NikSimulatorSettings
from gelombang.processes import free_port
from intake.nik import nik_birth_date as door_birth_date
from intake.validation import FieldInvalid, normalise_name
from tests.support import FULL_WIDTH, REPO_ROOT
from workers.sandbox.nik_sim import VERIFY_PATH, Simulator, build_app
from workers.sandbox.population import (
    GIVEN_NAMES,
    SECOND_NAMES,
    CivilRecord,
    find_nik,
    is_drifted,
    names_match,
    nik_birth_date,
    random_nik,
    record_for,
)

SEED = 2020
SHARE = 0.95
USER, PASSWORD = "gelombang", "s3cret"


def basic(login: str, password: str) -> str:
    """An Authorization header value (aiohttp.BasicAuth is deprecated)."""
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


AUTH = basic(USER, PASSWORD)
Client = TestClient[web.Request, web.Application]


def sim_settings(**changes: Any) -> NikSimulatorSettings:
    """Simulator settings without latency or errors, with a roomy capacity."""
    figures: dict[str, Any] = {
        "host": "127.0.0.1", "port": 0, "capacity_per_second": 1000.0,
        "latency_ms_median": 0.0, "latency_ms_p99": 0.0, "error_rate": 0.0,
        "population_seed": SEED, "existing_share": SHARE,
    }
    return NikSimulatorSettings(**{**figures, **changes})


def sample_niks(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [random_nik(rng) for _ in range(count)]


# --- the population ---------------------------------------------------------------------


def test_records_are_a_pure_function_of_seed_and_nik() -> None:
    niks = sample_niks(300)
    first = [record_for(nik, SEED, SHARE) for nik in niks]
    again = [record_for(nik, SEED, SHARE) for nik in niks]
    assert first == again
    other_seed = [record_for(nik, SEED + 1, SHARE) for nik in niks]
    assert first != other_seed
    assert all(record is None or isinstance(record, CivilRecord) for record in first)


def test_a_record_never_shows_its_values() -> None:
    record = CivilRecord("Siti Rahmawati", datetime.date(1990, 1, 2))
    for text in (repr(record), str(record), f"{record}", repr([record])):
        assert "Siti" not in text and "1990" not in text


@pytest.mark.parametrize("share", [0.95, 0.5, 0.1])
def test_the_existing_share_is_roughly_honoured(share: float) -> None:
    niks = sample_niks(2000)
    existing = sum(record_for(nik, SEED, share) is not None for nik in niks)
    assert abs(existing / 2000 - share) < 0.04
    assert sum(record_for(nik, SEED, 0.0) is not None for nik in niks) == 0
    assert sum(record_for(nik, SEED, 1.0) is not None for nik in niks) == 2000


def test_names_pass_the_doors_name_rule() -> None:
    for name in (*GIVEN_NAMES, *SECOND_NAMES):
        assert unicodedata.is_normalized("NFC", name)
        assert normalise_name(name) == name
    names = [record.full_name for nik in sample_niks(2000)
             if (record := record_for(nik, SEED, 1.0)) is not None]
    bad = 0
    for name in names:
        try:
            stored = normalise_name(name)
        except FieldInvalid:
            bad += 1
            continue
        bad += stored != name or len(name) > 100
    assert bad == 0
    # The population exercises the rule's edges: punctuation, several words, non-ASCII.
    assert any("'" in name for name in names)
    assert any("-" in name for name in names)
    assert any("." in name for name in names)
    assert any(not name.isascii() for name in names)
    assert any(" " not in name for name in names)
    assert any(name.count(" ") >= 2 for name in names)
    assert len(set(names)) > 500


def test_the_birth_date_comes_from_the_nik() -> None:
    today = datetime.date(2026, 6, 1)
    # Positions 7-12 are DDMMYY; women carry the day plus 40. This century only
    # for someone at least 17 this year. Failures name the case, not the NIK.
    cases = {
        "a man": ("3171010101900002", datetime.date(1990, 1, 1)),
        "a woman": ("3201014506990001", datetime.date(1999, 6, 5)),
        "a woman born on the 31st": ("3201017112880001", datetime.date(1988, 12, 31)),
        "17 this year": ("3201010101090001", datetime.date(2009, 1, 1)),
        "16 this year": ("3201010101100001", datetime.date(1910, 1, 1)),
        "a leap day": ("3201012902000001", datetime.date(2000, 2, 29)),
    }
    wrong = [case for case, (nik, born) in cases.items() if nik_birth_date(nik, today) != born]
    assert wrong == []


def test_records_carry_the_niks_birth_date_but_two_percent_drift_by_a_day() -> None:
    outcomes: Counter[str] = Counter()
    for nik in sample_niks(5000):
        record = record_for(nik, SEED, 1.0)
        born = nik_birth_date(nik)
        assert record is not None and born is not None
        if record.birth_date == born:
            outcomes["plain" if not is_drifted(nik, SEED) else "drift not applied"] += 1
        elif record.birth_date == born + datetime.timedelta(days=1):
            outcomes["drifted" if is_drifted(nik, SEED) else "drift unannounced"] += 1
        else:
            outcomes["other"] += 1
    assert set(outcomes) == {"plain", "drifted"}
    drifted = outcomes["drifted"]
    assert 0.012 < drifted / 5000 < 0.028


@pytest.mark.parametrize("nik", [
    pytest.param("", id="empty"),
    pytest.param("317101010190000", id="15-digits"),
    pytest.param("31710101019000021", id="17-digits"),
    pytest.param("31710101019O0002", id="a-letter"),
    pytest.param("3171010101900002".translate(FULL_WIDTH),
                 id="full-width-digits"),
    pytest.param("3171010001900002", id="day-00"),
    pytest.param("3171013201900002", id="day-32"),
    pytest.param("3171017201900002", id="womans-day-72"),
    pytest.param("3171011013900002", id="month-13"),
    pytest.param("3171012902990002", id="29-feb-1999"),
    pytest.param("3171016902990002", id="womans-29-feb-1999"),
])
def test_malformed_niks_have_no_record(nik: str) -> None:
    found = record_for(nik, SEED, 1.0)
    assert found is None


def test_names_match_up_to_form_case_and_spacing() -> None:
    assert names_match("Siti Rahmawati", "siti rahmawati")
    assert names_match("  Siti   Rahmawati ", "SITI RAHMAWATI")
    assert names_match("Siti\tRahmawati", "Siti Rahmawati")
    assert names_match("André Halim", "Andre\u0301 Halim")  # NFC vs NFD
    assert names_match("ANDRÉ", "andré")
    assert not names_match("Siti Rahmawati", "Siti Rahmawat")
    assert not names_match("Nur'aini", "Nuraini")
    assert not names_match("André", "Andre")
    assert not names_match("SitiRahmawati", "Siti Rahmawati")


def test_find_nik_finds_what_was_asked() -> None:
    rng = random.Random(3)
    today = datetime.date.today()
    for _ in range(20):
        nik = find_nik(SEED, SHARE, rng=rng)
        record = record_for(nik, SEED, SHARE)
        born = nik_birth_date(nik)
        assert record is not None
        assert record.birth_date == born
        # The door's own rule agrees: region codes, date and serial are valid.
        door_date = door_birth_date(nik, today)
        assert door_date == born
        missing = record_for(find_nik(SEED, SHARE, exists=False, rng=rng), SEED, SHARE)
        assert missing is None
        drifted_nik = find_nik(SEED, SHARE, drifted=True, rng=rng)
        drifted = record_for(drifted_nik, SEED, SHARE)
        typed = nik_birth_date(drifted_nik)
        assert drifted is not None and typed is not None
        assert drifted.birth_date == typed + datetime.timedelta(days=1)
    with pytest.raises(ValueError):
        find_nik(SEED, 0.0, rng=rng)
    with pytest.raises(ValueError):
        find_nik(SEED, 1.0, exists=False, rng=rng)
    with pytest.raises(ValueError):
        find_nik(SEED, SHARE, exists=False, drifted=True, rng=rng)


def test_random_niks_are_adults_aged_20_to_50_half_of_them_women() -> None:
    today = datetime.date.today()
    women = 0
    for nik in sample_niks(1000):
        born = nik_birth_date(nik)
        assert born is not None
        assert 19 <= (today - born).days // 365.25 <= 50
        women += int(nik[6:8]) > 40
    assert 400 < women < 600


# --- the API ----------------------------------------------------------------------------


class FakeClock:
    """A settable unix time, so tests decide which second a request falls in."""

    def __init__(self, now: float = 1_800_000_000.5) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def simulator(
    clock: FakeClock | None = None, password: str = PASSWORD, **changes: Any
) -> AsyncIterator[Client]:
    app = build_app(sim_settings(**changes), USER, password, clock=clock or FakeClock())
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def verify(
    client: Client, nik: str, name: str, born: datetime.date | str,
    auth: str | None = AUTH,
) -> tuple[int, dict[str, Any]]:
    body = {"nik": nik, "full_name": name,
            "birth_date": born if isinstance(born, str) else born.isoformat()}
    headers = {"Authorization": auth} if auth else {}
    async with client.post(VERIFY_PATH, json=body, headers=headers) as response:
        return response.status, await response.json()


async def admin(client: Client, method: str, path: str, body: object = None) -> Any:
    async with client.request(method, path, json=body) as response:
        assert response.status == 200
        return await response.json()


def person(*, exists: bool = True, drifted: bool = False, seed: int = 11) -> tuple[
    str, CivilRecord | None
]:
    nik = find_nik(SEED, SHARE, exists=exists, drifted=drifted, rng=random.Random(seed))
    return nik, record_for(nik, SEED, SHARE)


async def test_results_match_mismatch_and_not_found() -> None:
    nik, record = person()
    assert record is not None
    drifted_nik, drifted = person(drifted=True)
    assert drifted is not None
    missing_nik, _ = person(exists=False)
    typed = f"  {record.full_name.upper()}  "
    async with simulator() as client:
        assert await verify(client, nik, record.full_name, record.birth_date) == (
            200, {"result": "match"})
        assert await verify(client, nik, typed, record.birth_date) == (200, {"result": "match"})
        assert await verify(client, nik, "Nama Lain", record.birth_date) == (
            200, {"result": "name_mismatch"})
        # The name is checked first.
        assert await verify(client, nik, "Nama Lain", "1970-01-01") == (
            200, {"result": "name_mismatch"})
        assert await verify(client, nik, record.full_name, "1970-01-01") == (
            200, {"result": "birth_date_mismatch"})
        # A drifted record disagrees with the date the NIK encodes, as typed by its holder.
        typed_date = nik_birth_date(drifted_nik)
        assert typed_date is not None
        assert await verify(client, drifted_nik, drifted.full_name, typed_date) == (
            200, {"result": "birth_date_mismatch"})
        assert await verify(client, drifted_nik, drifted.full_name, drifted.birth_date) == (
            200, {"result": "match"})
        assert await verify(client, missing_nik, "Siti Rahmawati", "1990-01-01") == (
            200, {"result": "not_found"})
        assert await verify(client, "123", "Siti Rahmawati", "1990-01-01") == (
            200, {"result": "not_found"})


async def test_credentials() -> None:
    nik, record = person()
    assert record is not None
    async with simulator() as client:
        for auth in (None, basic(USER, "wrong"), basic("other", PASSWORD)):
            assert await verify(client, nik, record.full_name, record.birth_date, auth) == (
                401, {"error": "unauthorized"})
        async with client.post(VERIFY_PATH, json={}, headers={"Authorization": "Basic %%%"}) as r:
            assert r.status == 401
        async with client.post(VERIFY_PATH, json={}, headers={"Authorization": "Bearer x"}) as r:
            assert r.status == 401
    # No configured password: any password goes, for the configured user only.
    async with simulator(password="") as client:
        status, _ = await verify(client, nik, record.full_name, record.birth_date,
                                 basic(USER, "anything"))
        assert status == 200
        status, _ = await verify(client, nik, record.full_name, record.birth_date,
                                 basic("other", "anything"))
        assert status == 401


@pytest.mark.parametrize("body", [
    pytest.param(b"{not json", id="not-json"),
    pytest.param(b"[]", id="an-array"),
    pytest.param(b'"text"', id="a-string"),
    pytest.param(b'{"nik": "3171010101900002", "full_name": "Siti"}', id="no-birth-date"),
    pytest.param(b'{"nik": 3171010101900002, "full_name": "Siti", "birth_date": "1990-01-01"}',
                 id="nik-a-number"),
    pytest.param(b'{"nik": "3171010101900002", "full_name": null, "birth_date": "1990-01-01"}',
                 id="name-null"),
    pytest.param(b'{"nik": "3171010101900002", "full_name": "Siti", "birth_date": "1990-02-30"}',
                 id="no-such-date"),
    pytest.param(b'{"nik": "3171010101900002", "full_name": "Siti", "birth_date": "19900101"}',
                 id="date-without-dashes"),
    pytest.param(b'{"nik": "3171010101900002", "full_name": "Siti", "birth_date": "1990-1-1"}',
                 id="date-without-zeros"),
])
async def test_malformed_bodies_are_bad_requests(body: bytes) -> None:
    async with simulator() as client, client.post(
        VERIFY_PATH, data=body, headers={"Authorization": AUTH, "Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
        assert await response.json() == {"error": "bad_request"}


async def test_capacity_per_calendar_second() -> None:
    nik, record = person()
    assert record is not None
    clock = FakeClock()
    async with simulator(clock, capacity_per_second=3.0) as client:
        answers = [await verify(client, nik, record.full_name, record.birth_date)
                   for _ in range(5)]
        assert [status for status, _ in answers] == [200, 200, 200, 429, 429]
        assert answers[-1][1] == {"error": "rate_limited"}
        async with client.post(VERIFY_PATH, json={}, headers={"Authorization": AUTH}) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "1"
        # Unauthenticated calls use up capacity too: the gateway counts before it checks.
        clock.now += 1
        for _ in range(3):
            assert (await verify(client, nik, "x", "1990-01-01", auth=None))[0] == 401
        assert (await verify(client, nik, record.full_name, record.birth_date))[0] == 429
        clock.now += 1
        assert (await verify(client, nik, record.full_name, record.birth_date))[0] == 200
        stats = await admin(client, "GET", "/admin/stats")
    base = int(FakeClock().now)
    assert stats["per_second"] == {str(base): 6, str(base + 1): 4, str(base + 2): 1}
    assert stats["max_per_second"] == 6
    assert stats["statuses"] == {"200": 4, "401": 3, "429": 4}


async def test_capacity_on_the_real_clock() -> None:
    nik, record = person()
    assert record is not None
    app = build_app(sim_settings(capacity_per_second=4.0), USER, PASSWORD)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    try:
        # Start early in a second, so the burst falls within one.
        await asyncio.sleep(1 - time.time() % 1 + 0.01)
        answers = await asyncio.gather(*(
            verify(client, nik, record.full_name, record.birth_date) for _ in range(10)))
        assert Counter(status for status, _ in answers) == {200: 4, 429: 6}
    finally:
        await client.close()


async def test_outage_on_and_off() -> None:
    nik, record = person()
    assert record is not None
    async with simulator() as client:
        assert await admin(client, "PUT", "/admin/outage", {"on": True}) == {"outage": True}
        async with client.post(VERIFY_PATH, json={}, headers={"Authorization": AUTH}) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            assert await response.json() == {"error": "outage"}
        # Before credentials are even looked at.
        assert await verify(client, nik, record.full_name, record.birth_date, auth=None) == (
            503, {"error": "outage"})
        assert (await admin(client, "GET", "/admin/stats"))["outage"] is True
        assert await admin(client, "PUT", "/admin/outage", {"on": False}) == {"outage": False}
        assert await verify(client, nik, record.full_name, record.birth_date) == (
            200, {"result": "match"})
        for bad in ({"on": "yes"}, {}, {"on": 1}):
            async with client.put("/admin/outage", json=bad) as response:
                assert response.status == 422
        assert (await admin(client, "GET", "/admin/stats"))["outage"] is False


async def test_error_rate() -> None:
    nik, record = person()
    assert record is not None
    async with simulator(error_rate=1.0) as client:
        for _ in range(3):
            assert await verify(client, nik, record.full_name, record.birth_date) == (
                500, {"error": "internal"})
        # Credentials and the body are checked before the coin is tossed.
        assert (await verify(client, nik, "x", "1990-01-01", auth=None))[0] == 401
    async with simulator(error_rate=0.3) as client:
        statuses = Counter([(await verify(client, nik, record.full_name, record.birth_date))[0]
                            for _ in range(300)])
    assert set(statuses) == {200, 500}
    assert 50 < statuses[500] < 130


async def test_stats_and_reset() -> None:
    nik, record = person()
    missing_nik, _ = person(exists=False)
    assert record is not None
    clock = FakeClock()
    async with simulator(clock) as client:
        await verify(client, nik, record.full_name, record.birth_date)
        await verify(client, nik, "Nama Lain", record.birth_date)
        clock.now += 1
        await verify(client, missing_nik, "Nama Lain", "1990-01-01")
        await verify(client, nik, record.full_name, record.birth_date)
        await verify(client, nik, record.full_name, record.birth_date, auth=None)
        clock.now += 5
        async with client.post(VERIFY_PATH, data=b"{", headers={"Authorization": AUTH}):
            pass
        stats = await admin(client, "GET", "/admin/stats")
        base = int(FakeClock().now)
        assert stats == {
            "received": 6,
            "statuses": {"200": 4, "400": 1, "401": 1},
            "results": {"match": 2, "name_mismatch": 1, "not_found": 1},
            "per_second": {str(base): 2, str(base + 1): 3, str(base + 6): 1},
            "max_per_second": 3,
            "max_in_flight": 1,
            "answered_again": 2,  # the first NIK answered three times
            "outage": False,
        }
        await admin(client, "POST", "/admin/reset")
        stats = await admin(client, "GET", "/admin/stats")
        assert stats == {"received": 0, "statuses": {}, "results": {}, "per_second": {},
                         "max_per_second": 0, "max_in_flight": 0, "answered_again": 0,
                         "outage": False}
        await verify(client, nik, record.full_name, record.birth_date)
        stats = await admin(client, "GET", "/admin/stats")
        assert (stats["received"], stats["answered_again"]) == (1, 0)


async def test_latency_and_requests_in_flight() -> None:
    nik, record = person()
    assert record is not None
    async with simulator(latency_ms_median=150.0, latency_ms_p99=150.0) as client:
        started = time.monotonic()
        answers = await asyncio.gather(*(
            verify(client, nik, record.full_name, record.birth_date) for _ in range(6)))
        elapsed = time.monotonic() - started
        assert {status for status, _ in answers} == {200}
        assert 0.15 <= elapsed < 1.0
        stats = await admin(client, "GET", "/admin/stats")
        assert stats["max_in_flight"] == 6


def test_latency_is_log_normal_with_the_configured_median_and_p99() -> None:
    sim = Simulator(sim_settings(latency_ms_median=40.0, latency_ms_p99=300.0), USER, PASSWORD)
    draws = sorted(sim.latency_seconds() for _ in range(20_000))
    median, p99 = draws[10_000] * 1000, draws[19_800] * 1000
    assert 36 < median < 44
    assert 260 < p99 < 340
    assert draws[-1] <= 3.0  # capped at ten p99s
    flat = Simulator(sim_settings(), USER, PASSWORD)
    assert flat.latency_seconds() == 0.0


async def test_live_settings() -> None:
    nik, record = person()
    assert record is not None
    async with simulator() as client:
        current = await admin(client, "PUT", "/admin/settings", {"capacity_per_second": 2})
        assert current == {"capacity_per_second": 2.0, "error_rate": 0.0,
                           "latency_ms_median": 0.0, "latency_ms_p99": 0.0}
        statuses = [(await verify(client, nik, record.full_name, record.birth_date))[0]
                    for _ in range(3)]
        assert statuses == [200, 200, 429]
        current = await admin(client, "PUT", "/admin/settings", {
            "capacity_per_second": 100.0, "error_rate": 1, "latency_ms_median": 5,
            "latency_ms_p99": 20})
        assert current == {"capacity_per_second": 100.0, "error_rate": 1.0,
                           "latency_ms_median": 5.0, "latency_ms_p99": 20.0}
        assert (await verify(client, nik, record.full_name, record.birth_date))[0] == 500
        for bad in ({"capacity_per_second": 0}, {"capacity_per_second": -1},
                    {"error_rate": 1.5}, {"error_rate": -0.1}, {"latency_ms_median": -1},
                    {"latency_ms_p99": 1}, {"error_rate": "0.1"}, {"error_rate": True},
                    {"population_seed": 3}, {"capacity": 10}):
            async with client.put("/admin/settings", json=bad) as response:
                assert response.status == 422
                assert await response.json() == {"error": "invalid_value"}
        async with client.put("/admin/settings", data=b"{") as response:
            assert response.status == 400
        # A refused change leaves every figure as it was.
        assert await admin(client, "PUT", "/admin/settings", {}) == current


# --- the command ------------------------------------------------------------------------


def _http(url: str, method: str, data: bytes | None = None) -> Any:
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return orjson.loads(response.read())


def _ignoring_errors(request: urllib.request.Request) -> None:
    with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=30):
        pass


def test_the_command_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    nik, record = person()
    assert record is not None
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("GELOMBANG_")}
    env.update({"GELOMBANG_NIK__USERNAME": "sim-user", "GELOMBANG_NIK__PASSWORD": "sim-pass",
                "GELOMBANG_NIK_SIM__POPULATION_SEED": str(SEED),
                "GELOMBANG_NIK_SIM__EXISTING_SHARE": str(SHARE),
                "GELOMBANG_NIK_SIM__LATENCY_MS_MEDIAN": "1", "PYTHONUNBUFFERED": "1"})
    log_path = tmp_path / "nik-sim.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gelombang", "nik-sim", "--port", str(port),
             "--capacity", "50", "--error-rate", "0"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while f"listening on 127.0.0.1:{port}" not in log_path.read_text(errors="replace"):
            assert process.poll() is None, log_path.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the simulator did not start in time"
            time.sleep(0.05)
        body = {"nik": nik, "full_name": record.full_name,
                "birth_date": record.birth_date.isoformat()}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{VERIFY_PATH}", data=orjson.dumps(body), method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": basic("sim-user", "sim-pass")})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
            assert orjson.loads(response.read()) == {"result": "match"}
        # A request still sleeping at SIGTERM does not hold up the stop for long.
        base = f"http://127.0.0.1:{port}"
        slow = {"latency_ms_median": 30_000, "latency_ms_p99": 30_000}
        _http(f"{base}/admin/settings", "PUT", orjson.dumps(slow))
        stuck = threading.Thread(target=_ignoring_errors, args=(request,), daemon=True)
        stuck.start()
        while _http(f"{base}/admin/stats", "GET")["received"] < 2:
            assert time.monotonic() < deadline, "the second request never arrived"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - stopping < 5
        stuck.join(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text
    leaked = [value for value in (nik, record.full_name, record.birth_date.isoformat())
              if value in text]
    assert len(leaked) == 0
