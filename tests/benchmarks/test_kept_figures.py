"""What each suite keeps for `gelombang plan`, and that a --tiny run keeps nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import kept_figures
from benchmarks.harness import BenchRun
from benchmarks.verification_cpu import FIGURES_MIN_COUNT, kept
from gelombang.capacity_figures import FIGURES_FILE, load_figures


def test_door_cpu_per_registration_at_the_fewest_connections() -> None:
    medians = {"door @ 64": {"server_cpu": 0.95, "accepted_per_second": 4771.0},
               "door @ 256": {"server_cpu": 0.95, "accepted_per_second": 5337.0}}
    assert kept_figures.door(medians, [256, 64], "door") == {
        "door_cpu_us": pytest.approx(199.1, abs=0.05)}
    assert kept_figures.door({}, [64], "door") == {}


def test_scale_keeps_redis_cpu_with_the_fewest_processes() -> None:
    assert kept_figures.scale({16: {"redis_us_per_admitted": 22.5},
                               1: {"redis_us_per_admitted": 21.9}}) == {
        "admission_redis_cpu_us": 21.9}


def test_drain_figures_are_the_drain_phase_medians() -> None:
    def phase(kind: str, workers: float, rows: int = 1_000_000) -> dict[str, object]:
        return {"kind": kind, "rows": rows, "seconds": 29.6,
                "cpu_seconds": {"workers": workers, "postgres": 26.0, "redis": 12.0}}

    rounds = [{"phases": [phase("copy", 0.0), phase("drain", 13.0), phase("floor", 8.0)]},
              {"phases": [phase("drain", 15.0)]}, {"phases": [phase("drain", 11.0)]}]
    assert kept_figures.drain(rounds, 8) == pytest.approx({
        "drain_worker_cpu_us": 13.0, "drain_postgres_cpu_us": 26.0, "drain_redis_cpu_us": 12.0,
        "drain_partition_rows_per_s": 1_000_000 / 29.6 / 8})


def test_memory_adds_the_other_tables_to_the_row() -> None:
    results = {"door": {"redis_per_registration": 322.4, "peak_rss": 72.1 * 2**20},
               "redis": {"after_drain_per_registration": 69.1},
               "postgres": {"total_per_row": 479.0}, "other_tables_per_registration": 18.0}
    assert kept_figures.memory(results) == pytest.approx({
        "redis_bytes_queued": 322.4, "redis_bytes_after_drain": 69.1,
        "postgres_bytes_per_row": 497.0, "door_rss_mib": 72.1})


def test_verification_keeps_the_shared_costs_only_from_a_run_of_both_roles() -> None:
    per = {"email": 192.0, "nik": 183.0, "postgres": 103.0, "redis": 33.0}
    both = {"cpu_us_per_registration": per, "roles": ["email", "nik"],
            "count": FIGURES_MIN_COUNT}
    assert kept_figures.verification_cpu(both) == {
        "email_worker_cpu_us": 192.0, "nik_worker_cpu_us": 183.0,
        "verification_postgres_cpu_us": 103.0, "verification_redis_cpu_us": 33.0}
    assert kept_figures.verification_cpu(both | {"roles": ["nik"]}) == {
        "nik_worker_cpu_us": 183.0}
    assert kept(both) != {}
    # The harness's own test runs 300: ticks of /proc, not figures.
    assert kept(both | {"count": 300}) == {}


@pytest.mark.parametrize(("size", "kept_file"), [("full", True), ("tiny", False)])
def test_a_suite_keeps_figures_beside_its_results_unless_tiny(
        tmp_path: Path, size: str, kept_file: bool) -> None:
    run = BenchRun("door", tmp_path / "door", size=size)
    folder = run.finish({}, "| a |\n", figures={"door_cpu_us": 150.0})
    assert (folder / FIGURES_FILE).exists() is kept_file
    if kept_file:
        document = json.loads((folder / FIGURES_FILE).read_text())
        results = json.loads((folder / "results.json").read_text())
        assert document["measured_at"] == results["finished_at"]
        assert document["results"] == "results.json"
        # What `gelombang plan` then reads from that results folder.
        found = load_figures(tmp_path)["door_cpu_us"]
        assert found.measured and found.value == 150.0
