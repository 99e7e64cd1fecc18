"""`gelombang plan`: rates, durations and shares parsed or refused; exit codes; text and JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gelombang.capacity_figures import FIGURES_FILE, write_figures
from gelombang.cli import main
from gelombang.plan_command import (
    EXIT_BAD_FIGURES,
    parse_duration,
    parse_rate,
    parse_utilisation,
    parse_volume,
)

OPENING = ["plan", "--rate", "2000000/min", "--ministry", "1500/s", "--relay", "500/s"]


@pytest.mark.parametrize(("text", "per_second"), [
    ("2000000/min", 2_000_000 / 60), ("1500/s", 1500), ("80k/min", 80_000 / 60),
    ("2M/min", 2_000_000 / 60), ("2,000,000/min", 2_000_000 / 60), ("1.5k/s", 1500),
    ("7200/h", 2), (" 500 / s ", 500),
])
def test_rates_are_read_per_second(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize(("text", "message"), [
    ("1500", "count per unit"), ("1500/day", "count per unit"), ("fast/s", "not a number"),
    ("80x/min", "not a number"), ("0/s", "above zero"), ("-5/s", "not a number"),
])
def test_bad_rates_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_rate(text)


def test_durations_volumes_and_shares() -> None:
    assert [parse_duration(t) for t in ("90s", "10min", "1h")] == [90, 600, 3600]
    assert parse_volume("20M") == 20_000_000 and parse_volume("1.43M") == 1_430_000
    assert parse_utilisation("60") == parse_utilisation("60%") == parse_utilisation("0.6") == 0.6
    for bad in ("10", "ten min", "0s"):
        with pytest.raises(argparse.ArgumentTypeError, match="duration"):
            parse_duration(bad)
    for bad in ("0", "150%", "busy"):
        with pytest.raises(argparse.ArgumentTypeError, match="utilisation"):
            parse_utilisation(bad)


def test_the_opening_on_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*OPENING, "--defaults"]) == 0
    out = capsys.readouterr().out
    assert "2,000,000/min (33,333/s) for 600 s = 20,000,000 registrations" in out
    assert "ceil(33,333/s x 199 µs / 60% of 1e6 µs/s) = ceil(11.06)" in out
    assert "door_cpu_us = 199.1" in out and "[DEFAULT: docs/performance/" in out
    assert "[measured" not in out


def test_json_lists_lines_and_figures_with_their_sources(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "drain-x").mkdir()
    write_figures(tmp_path / "drain-x", "drain", {"drain_worker_cpu_us": 30.0},
                  {"cpu": "Test CPU", "cores": 16}, "2026-12-07T00:00:00Z")
    assert main([*OPENING, "--volume", "1M", "--cores", "8", "--utilisation", "50%",
                 "--results", str(tmp_path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["inputs"]["volume"] == 1_000_000 and plan["inputs"]["cores"] == 8
    lines = {line["what"]: line for line in plan["lines"]}
    # 33,333/s x 30 µs / 500,000 µs = 2.0 (and a hair): 3 processes.
    assert lines["drain worker processes"]["value"] == 3
    drain = plan["figures"]["drain_worker_cpu_us"]
    assert drain["measured"] and str(tmp_path / "drain-x" / FIGURES_FILE) in drain["source"]
    assert not plan["figures"]["door_cpu_us"]["measured"]


@pytest.mark.parametrize("argv", [
    ["plan", "--rate", "2000000", "--ministry", "1500/s", "--relay", "500/s"],
    ["plan", "--ministry", "1500/s", "--relay", "500/s"],
    [*OPENING, "--cores", "0"],
    [*OPENING, "--duration", "10min", "--volume", "1M"],
])
def test_bad_input_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "gelombang plan: error:" in capsys.readouterr().err


def test_an_unreadable_figures_file_exits_3(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "door-x").mkdir()
    (tmp_path / "door-x" / FIGURES_FILE).write_text("{not json")
    assert main([*OPENING, "--results", str(tmp_path)]) == EXIT_BAD_FIGURES
    assert "not a figures file" in capsys.readouterr().err
