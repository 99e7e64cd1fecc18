"""intake/metrics.py: counts kept locally, flushed into prometheus-client as if called each time."""

from __future__ import annotations

import math

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from intake import metrics
from loadtest.registrants import RegistrantFactory
from tests.intake.door_helpers import DoorUnderTest

BUCKETS = (0.001, 0.01, 0.1, 1.0)
# Below, on and between the bounds, past the last one, and zero.
VALUES = (0.0, 0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.99, 1.0, 1.5, 30.0, 0.001)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect() for sample in family.samples
            if not sample.name.endswith("_created")}


def test_a_flushed_histogram_reads_as_one_observe_per_value() -> None:
    called, local = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("latency", "", ["route"], buckets=BUCKETS, registry=called)
    counted = metrics.LocalHistogram(
        Histogram("latency", "", ["route"], buckets=BUCKETS, registry=local).labels("a"))
    for value in VALUES:
        direct.labels("a").observe(value)
        counted.observe(value)
    counted.flush()
    expected, found = _samples(called), _samples(local)
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        # The sum is added in one step: the same up to float rounding.
        assert math.isclose(found[key], value), key
    assert found[("latency_count", (("route", "a"),))] == len(VALUES)
    # Flushed counts are gone from the local buckets: a second flush adds nothing.
    counted.flush()
    assert _samples(local) == found


def test_counts_made_between_two_flushes_all_appear_in_the_second() -> None:
    registry = CollectorRegistry()
    counter = metrics.LocalCounter(Counter("things", "", registry=registry))
    counter.inc()
    counter.flush()
    assert registry.get_sample_value("things_total") == 1
    for _ in range(1000):
        counter.inc()
    counter.inc(5)
    assert registry.get_sample_value("things_total") == 1  # not flushed yet
    counter.flush()
    assert registry.get_sample_value("things_total") == 1006


def _series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def _scrape(door: DoorUnderTest) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with door.admin.get("/metrics") as response:
        assert response.status == 200
        return _series(await response.text())


async def test_every_request_between_two_scrapes_is_in_the_second(
        door_under_test: DoorUnderTest, registrants: RegistrantFactory) -> None:
    created = ("route", "registrations.create")
    accepted = ("gelombang_http_request_duration_seconds_count", (created, ("status", "202")))
    refused = ("gelombang_http_request_duration_seconds_count", (created, ("status", "422")))
    admitted = ("gelombang_admission_decisions_total", (("outcome", "admitted"),))
    before = await _scrape(door_under_test)
    for number in range(25):
        body = registrants.make().body()
        if number % 5 == 0:
            body["email"] = "not an address"
        async with door_under_test.public.post(
            "/v1/registrations", data=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
        ) as response:
            assert response.status == (422 if number % 5 == 0 else 202)
    # No wait for the periodic flush: the scrape flushes this process first.
    after = await _scrape(door_under_test)
    assert after[accepted] - before.get(accepted, 0.0) == 20
    assert after[refused] - before.get(refused, 0.0) == 5
    assert after[admitted] - before.get(admitted, 0.0) == 20
    # Each group of the round trips is counted too (at least one, at most one per admission).
    groups = ("gelombang_admission_group_size_count", ())
    assert 1 <= after[groups] - before.get(groups, 0.0) <= 20
    # Cumulative buckets stay consistent: +Inf is the count.
    infinite = ("gelombang_http_request_duration_seconds_bucket",
                (("le", "+Inf"), created, ("status", "202")))
    assert after[infinite] == after[accepted]
