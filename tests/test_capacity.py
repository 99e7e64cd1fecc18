"""The capacity plan's arithmetic on figures worked out by hand, and where its figures come from."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from gelombang.capacity import Config, PlanInputs, make_plan
from gelombang.capacity_figures import (
    FIGURES_FILE,
    SPECS,
    Figure,
    FiguresError,
    load_figures,
    write_figures,
)

REPO = Path(__file__).resolve().parents[1]
ROUND = {"door_cpu_us": 100.0, "admission_redis_cpu_us": 20.0, "drain_worker_cpu_us": 10.0,
         "drain_postgres_cpu_us": 20.0, "drain_redis_cpu_us": 10.0,
         "drain_partition_rows_per_s": 1000.0, "email_worker_cpu_us": 200.0,
         "nik_worker_cpu_us": 100.0, "verification_postgres_cpu_us": 100.0,
         "verification_redis_cpu_us": 40.0, "redis_bytes_queued": 300.0,
         "redis_bytes_after_drain": 50.0, "postgres_bytes_per_row": 500.0,
         "door_rss_mib": 100.0}


def figures(values: dict[str, float]) -> dict[str, Figure]:
    return {name: Figure(name, value, True, "test") for name, value in values.items()}


def test_round_figures_name_every_figure_the_plan_reads() -> None:
    assert set(ROUND) == {spec.name for spec in SPECS}


def test_a_plan_worked_out_by_hand() -> None:
    # 12,000/s for 100 s at 50 % of 8-core machines: 500,000 µs of CPU per core-second.
    plan = make_plan(PlanInputs(rate=12_000, volume=1_200_000, ministry=1000, relay=500,
                                cores=8, utilisation=0.5), figures(ROUND))
    expected = {
        "door processes": 3,                  # 12,000 x 100 / 500,000 = 2.4
        "door machines": 1,
        "door memory": 300,                   # 3 x 100 MiB
        "drain worker processes": 1,          # 12,000 x 10 / 500,000 = 0.24
        "partitions": 24,                     # 12,000 / (1,000 x 0.5)
        "email worker processes": 1,          # 500 x 200 / 500,000 = 0.2
        "email checks done after": 2400,      # 1,200,000 / 500
        "email backlog at the wave's end": 1_150_000,  # 1,200,000 - 100 s x 500
        "NIK worker processes": 1,
        "NIK checks done after": 1200,        # 1,200,000 / 1,000
        "NIK backlog at the wave's end": 1_100_000,
        "Redis primaries": 1,                 # (12,000 x 30 + 1,500 x 20) / 500,000 = 0.78
        "Redis used_memory": 420_000_000 / 2**30,  # 1.2M x 300 + 1.2M x 50
        "Redis host memory per primary": 840_000_000 / 2**30,
        "PostgreSQL cores": 1,                # (12,000 x 20 + 1,500 x 50) / 500,000 = 0.63
        "PostgreSQL rows written": 13_500,
        "PostgreSQL commits": 39,             # 24 + 5 + 10
        "PostgreSQL connections": 41,         # 1 x 25 + 2 + 2 + 3 x 4
        "PostgreSQL storage": 600_000_000 / 2**30,
        "cores": 8,
        "machines": 1,
    }
    assert {line.what: line.value for line in plan.lines} == pytest.approx(expected)


def test_each_line_shows_its_inputs() -> None:
    plan = make_plan(PlanInputs(rate=12_000, volume=1_200_000, ministry=1000, relay=500,
                                cores=8, utilisation=0.5), figures(ROUND))
    formulas = {line.what: line.formula for line in plan.lines}
    assert formulas["door processes"] == "ceil(12,000/s x 100 µs / 50% of 1e6 µs/s) = ceil(2.40)"
    # The unrounded loads, where the ceiling alone would hide a wrong share.
    assert formulas["Redis primaries"].endswith("= ceil(0.78)")
    assert formulas["PostgreSQL cores"].endswith("= ceil(0.63)")


def test_checks_faster_than_intake_end_with_the_wave() -> None:
    plan = make_plan(PlanInputs(rate=100, volume=10_000, ministry=1000, relay=500,
                                utilisation=0.5), figures(ROUND))
    assert plan.value("email checks done after") == 100
    assert plan.value("email backlog at the wave's end") == 0


def test_redis_memory_counts_the_queue_only_up_to_the_high_water() -> None:
    inputs = PlanInputs(rate=10_000, volume=5_000_000, ministry=1000, relay=500,
                        config=Config(backlog_high_water=1_000_000))
    plan = make_plan(inputs, figures(ROUND))
    assert plan.value("Redis used_memory") == pytest.approx(
        (1_000_000 * 300 + 5_000_000 * 50) / 2**30)


def test_more_load_than_one_redis_core_takes_more_primaries() -> None:
    plan = make_plan(PlanInputs(rate=40_000, volume=40_000, ministry=1000, relay=500,
                                utilisation=0.5), figures(ROUND))
    # (40,000 x 30 + 1,500 x 20) / 500,000 = 2.46
    assert plan.value("Redis primaries") == 3


def test_the_configured_sizes_are_config_defaults() -> None:
    toml = tomllib.loads((REPO / "config" / "default.toml").read_text())
    assert Config() == Config(
        partitions=toml["queue"]["partitions"],
        backlog_high_water=toml["admission"]["backlog_high_water"],
        drain_batch_size=toml["drain"]["batch_size"],
        email_batch_size=toml["email"]["batch_size"], nik_batch_size=toml["nik"]["batch_size"],
        email_pg_connections=toml["email"]["pg_connections"],
        nik_pg_connections=toml["nik"]["pg_connections"],
        door_pool_max=toml["postgres"]["door_pool_max"])


def test_without_results_every_figure_is_its_documented_default(tmp_path: Path) -> None:
    for found in (load_figures(None), load_figures(tmp_path / "absent")):
        assert [figure.measured for figure in found.values()] == [False] * len(SPECS)
        for spec in SPECS:
            assert found[spec.name].value == spec.default
            assert found[spec.name].source.startswith("default: docs/performance/")
            page = spec.default_source.split(" ")[0]
            assert (REPO / page).is_file(), page


def test_the_newest_measured_figure_wins_and_names_its_file(tmp_path: Path) -> None:
    machine = {"cpu": "Test CPU", "cores": 16}
    (tmp_path / "door-old").mkdir()
    write_figures(tmp_path / "door-old", "door", {"door_cpu_us": 150.0}, machine,
                  "2026-12-01T00:00:00Z")
    (tmp_path / "bench-new" / "door").mkdir(parents=True)
    newer = write_figures(tmp_path / "bench-new" / "door", "door", {"door_cpu_us": 120.0},
                          machine, "2026-12-07T00:00:00Z")
    found = load_figures(tmp_path)
    assert found["door_cpu_us"].value == 120.0
    assert found["door_cpu_us"].measured
    assert str(newer) in found["door_cpu_us"].source
    assert "16 cores" in found["door_cpu_us"].source
    assert not found["drain_worker_cpu_us"].measured


def test_a_figures_file_that_is_not_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / "door-x").mkdir()
    (tmp_path / "door-x" / FIGURES_FILE).write_text(json.dumps(
        {"measured_at": "2026-12-07T00:00:00Z", "figures": {"door_cpu_us": "fast"}}))
    with pytest.raises(FiguresError, match="numbers"):
        load_figures(tmp_path)


def test_only_known_figures_are_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="door_speed"):
        write_figures(tmp_path, "door", {"door_speed": 1.0}, {}, "2026-12-07T00:00:00Z")
    assert write_figures(tmp_path, "door", {}, {}, "2026-12-07T00:00:00Z") is None
    assert not (tmp_path / FIGURES_FILE).exists()
