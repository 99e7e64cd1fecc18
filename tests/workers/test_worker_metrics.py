"""workers/metrics.py: a worker's metrics, scraped over real HTTP from its own port."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.settings import ConfigError, Settings
from gelombang.processes import port_is_free
from workers.metrics import (
    OUTCOMES,
    MetricsServer,
    NoFreeMetricsPort,
    WorkerMetrics,
    serve_metrics,
)

HOST = "127.0.0.1"
Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _free_range(size: int) -> range:
    """`size` consecutive free loopback ports, below Linux's ephemeral range."""
    for _ in range(200):
        start = random.randrange(20_000, 32_000)
        ports = range(start, start + size)
        if all(port_is_free(port, HOST) for port in ports):
            return ports
    raise RuntimeError(f"no {size} consecutive free ports found")


@pytest.fixture
def ports() -> range:
    return _free_range(4)


@pytest.fixture
async def servers() -> AsyncIterator[list[MetricsServer]]:
    """Servers a test started, closed at its end."""
    started: list[MetricsServer] = []
    try:
        yield started
    finally:
        for server in started:
            await server.close()


@pytest.fixture
def occupied() -> Iterator[list[socket.socket]]:
    """Listening sockets a test holds on ports, closed at its end."""
    sockets: list[socket.socket] = []
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen()
    return sock


async def _scrape(server: MetricsServer) -> Scrape:
    assert server.url is not None
    async with aiohttp.ClientSession() as session, session.get(server.url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _value(scrape: Scrape, name: str, **labels: str) -> float:
    return scrape[(name, frozenset(labels.items()))]


def _bucket(scrape: Scrape, name: str, le: str, **labels: str) -> float:
    return _value(scrape, f"{name}_bucket", le=le, **labels)


async def test_a_scrape_shows_what_the_worker_recorded(
        ports: range, servers: list[MetricsServer]) -> None:
    metrics = WorkerMetrics("nik", version="1.2.3")
    servers.append(server := await serve_metrics(metrics, HOST, ports))
    metrics.jobs("verified", 7)
    metrics.jobs("verified", 3)
    metrics.jobs("mismatch", 2)
    metrics.batch(12, 0.3)
    metrics.oldest_pending(42.5)
    metrics.backlog(1234)
    metrics.verified_after([2.0, 90.0, 4000.0, -0.5])
    metrics.outbound(38.5, 50.0)
    metrics.breaker("open")
    metrics.dead_letters(4)

    scrape = await _scrape(server)

    role = {"role": "nik"}
    assert _value(scrape, "gelombang_worker_jobs_total", outcome="verified", **role) == 10
    assert _value(scrape, "gelombang_worker_jobs_total", outcome="mismatch", **role) == 2
    # Every outcome of the role is there from the start, so rate() sees the first jobs.
    assert _value(scrape, "gelombang_worker_jobs_total", outcome="not_found", **role) == 0
    assert _value(scrape, "gelombang_worker_batch_size_sum", **role) == 12
    assert _bucket(scrape, "gelombang_worker_batch_size", "10.0", **role) == 0
    assert _bucket(scrape, "gelombang_worker_batch_size", "20.0", **role) == 1
    assert _value(scrape, "gelombang_worker_batch_seconds_sum", **role) == pytest.approx(0.3)
    assert _value(scrape, "gelombang_worker_oldest_pending_seconds", **role) == 42.5
    assert _value(scrape, "gelombang_worker_backlog", **role) == 1234
    latency = "gelombang_verification_latency_seconds"
    assert _value(scrape, f"{latency}_count", kind="nik") == 4
    assert _value(scrape, f"{latency}_sum", kind="nik") == 4092.0  # the -0.5 counts as 0
    assert _bucket(scrape, latency, "1.0", kind="nik") == 1
    assert _bucket(scrape, latency, "120.0", kind="nik") == 3
    assert _bucket(scrape, latency, "3600.0", kind="nik") == 3
    assert _bucket(scrape, latency, "7200.0", kind="nik") == 4
    assert _value(scrape, "gelombang_outbound_rate_used", service="nik") == 38.5
    assert _value(scrape, "gelombang_outbound_rate_allowed", service="nik") == 50.0
    assert _value(scrape, "gelombang_breaker_state", service="nik") == 2
    assert _value(scrape, "gelombang_worker_dead_letters_total", **role) == 4
    assert _value(scrape, "gelombang_worker_info", role="nik", version="1.2.3") == 1
    assert _value(scrape, "gelombang_worker_start_time_seconds", **role) > 1.7e9


async def test_later_calls_show_in_the_next_scrape(
        ports: range, servers: list[MetricsServer]) -> None:
    metrics = WorkerMetrics("email")
    servers.append(server := await serve_metrics(metrics, HOST, ports))
    metrics.jobs("sent", 5)
    metrics.breaker("half_open")
    metrics.backlog(10)
    first = await _scrape(server)

    metrics.jobs("sent", 1)
    metrics.breaker("closed")
    metrics.backlog(0)
    second = await _scrape(server)

    sent = ("gelombang_worker_jobs_total", {"role": "email", "outcome": "sent"})
    assert (_value(first, sent[0], **sent[1]), _value(second, sent[0], **sent[1])) == (5, 6)
    assert _value(first, "gelombang_breaker_state", service="smtp") == 1
    assert _value(second, "gelombang_breaker_state", service="smtp") == 0
    assert _value(second, "gelombang_worker_backlog", role="email") == 0


async def test_each_role_starts_with_its_outcomes_at_zero_and_nothing_else(
        ports: range, servers: list[MetricsServer]) -> None:
    metrics = WorkerMetrics("drain")
    servers.append(server := await serve_metrics(metrics, HOST, ports))

    scrape = await _scrape(server)

    outcomes = {dict(labels)["outcome"]: value for (name, labels), value in scrape.items()
                if name == "gelombang_worker_jobs_total"}
    assert outcomes == dict.fromkeys(OUTCOMES["drain"], 0.0)
    # The drain calls no outside service: no outbound or breaker series.
    assert not [name for name, _ in scrape if name.startswith(("gelombang_outbound",
                                                               "gelombang_breaker"))]


def test_what_a_role_does_not_record_is_refused() -> None:
    drain, nik = WorkerMetrics("drain"), WorkerMetrics("nik")
    with pytest.raises(ValueError, match="outcome"):
        drain.jobs("sent", 1)
    with pytest.raises(ValueError, match="outcome"):
        nik.jobs("stored", 1)
    with pytest.raises(ValueError, match="outside service"):
        drain.outbound(1.0, 2.0)
    with pytest.raises(ValueError, match="breaker"):
        drain.breaker("open")
    with pytest.raises(ValueError, match="breaker state"):
        nik.breaker("ajar")
    with pytest.raises(ValueError, match="role"):
        WorkerMetrics("store")  # type: ignore[arg-type]


async def test_processes_of_one_role_take_different_ports_of_the_range(
        ports: range, servers: list[MetricsServer]) -> None:
    first = WorkerMetrics("drain")
    second = WorkerMetrics("drain")
    first.jobs("accepted", 1)
    second.jobs("accepted", 2)

    servers.append(one := await serve_metrics(first, HOST, ports))
    servers.append(two := await serve_metrics(second, HOST, ports))

    assert (one.port, two.port) == (ports[0], ports[1])
    accepted = {"role": "drain", "outcome": "accepted"}
    assert _value(await _scrape(one), "gelombang_worker_jobs_total", **accepted) == 1
    assert _value(await _scrape(two), "gelombang_worker_jobs_total", **accepted) == 2


async def test_a_port_taken_by_anything_else_is_skipped(
        ports: range, servers: list[MetricsServer], occupied: list[socket.socket]) -> None:
    occupied.append(_listen(ports[0]))

    servers.append(server := await serve_metrics(WorkerMetrics("email"), HOST, ports))

    assert server.port == ports[1]
    assert await _scrape(server)


async def test_a_full_range_is_an_error_that_leaves_nothing_listening(
        ports: range, occupied: list[socket.socket]) -> None:
    small = ports[:2]
    occupied.extend(_listen(port) for port in small)

    with pytest.raises(NoFreeMetricsPort, match=f"{small[0]}-{small[1]}"):
        await serve_metrics(WorkerMetrics("nik"), HOST, small)

    assert all(port_is_free(port, HOST) for port in ports[2:])


async def test_turned_off_in_settings_means_no_listener(
        ports: range, servers: list[MetricsServer]) -> None:
    off = Settings.load(worker_metrics={"enabled": False, "drain_port": ports[0],
                                        "email_port": ports[0] + 1000, "nik_port": 0,
                                        "ports_per_role": len(ports)}).worker_metrics
    on = off.model_copy(update={"enabled": True})
    assert on.ports("drain") == ports  # the range that would be used

    servers.append(server := await serve_metrics(WorkerMetrics("drain"), off.host,
                                                 off.ports("drain")))

    assert (server.port, server.url) == (None, None)
    assert all(port_is_free(port, HOST) for port in ports)
    await server.close()  # closing a server that never listened is fine


def test_a_role_whose_port_is_0_has_no_ports() -> None:
    settings = Settings.load(worker_metrics={"nik_port": 0}).worker_metrics
    assert settings.ports("nik") == range(0)
    assert settings.ports("drain") == range(9101, 9111)


async def test_close_frees_the_port(ports: range) -> None:
    server = await serve_metrics(WorkerMetrics("drain"), HOST, ports)
    assert server.port == ports[0]
    assert not port_is_free(ports[0], HOST)

    await server.close()

    assert port_is_free(ports[0], HOST)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://{HOST}:{ports[0]}/metrics")
    # The next process of the role gets the first port again.
    async with await serve_metrics(WorkerMetrics("drain"), HOST, ports) as again:
        assert again.port == ports[0]
    await server.close()  # a second close does nothing


def test_the_default_ranges_are_apart_and_overlaps_are_refused() -> None:
    defaults = Settings.load().worker_metrics
    assert defaults.enabled and defaults.host == "127.0.0.1"
    assert [defaults.ports(role) for role in ("drain", "email", "nik")] == [
        range(9101, 9111), range(9111, 9121), range(9121, 9131)]
    with pytest.raises(ConfigError, match=r"worker_metrics: .*overlap"):
        Settings.load(worker_metrics={"ports_per_role": 11})
    with pytest.raises(ConfigError, match=r"worker_metrics: .*65535"):
        Settings.load(worker_metrics={"nik_port": 65530})


def test_the_environment_sets_the_listener_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GELOMBANG_WORKER_METRICS__HOST", "0.0.0.0")
    monkeypatch.setenv("GELOMBANG_WORKER_METRICS__ENABLED", "false")

    settings = Settings.load().worker_metrics

    assert (settings.host, settings.enabled, settings.drain_port) == ("0.0.0.0", False, 9101)
