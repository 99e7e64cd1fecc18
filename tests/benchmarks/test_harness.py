"""The benchmark harness: rounds alternate, figures and targets reach results.json/results.md."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks import bench_command
from benchmarks.harness import BenchRun, Target, alternate, markdown_table, new_figure, save_figure


def test_contenders_alternate_round_by_round() -> None:
    assert list(alternate(["nginx", "door"], 3)) == [
        (1, "nginx"), (1, "door"), (2, "nginx"), (2, "door"), (3, "nginx"), (3, "door")]


@pytest.mark.parametrize(("value", "goal", "better", "met"), [
    (0.81, 0.8, "higher", True), (0.79, 0.8, "higher", False),
    (9.5, 10.0, "lower", True), (10.5, 10.0, "lower", False),
])
def test_a_target_is_met_only_on_its_side_of_the_goal(value: float, goal: float, better: str,
                                                        met: bool) -> None:
    target = Target("ratio", value, goal, better)  # type: ignore[arg-type]
    assert target.met is met
    assert ("NOT met" in target.line()) is not met


def test_medians_are_taken_per_contender_and_per_setting(tmp_path: Path) -> None:
    run = BenchRun("door", tmp_path)
    for number, rps in enumerate([100.0, 300.0, 200.0], 1):
        run.record("door", number, {"connections": 64}, requests_per_second=rps)
        run.record("door", number, {"connections": 256}, requests_per_second=rps * 2)
    run.record("nginx", 1, {"connections": 64}, requests_per_second=9.0)
    assert run.medians()["door"]["requests_per_second"] == 250.0  # all six door rounds
    by_connections = run.medians("connections")
    assert by_connections["door @ 64"] == {"requests_per_second": 200.0}
    assert by_connections["door @ 256"] == {"requests_per_second": 400.0}
    assert by_connections["nginx @ 64"] == {"requests_per_second": 9.0}


def test_finish_writes_every_measurement_target_and_plot(tmp_path: Path) -> None:
    run = BenchRun("door", tmp_path / "door", size="tiny")
    run.record("door", 1, {"connections": 64}, requests_per_second=1234.5)
    run.target("door / plain aiohttp", 0.43, 0.8, "higher", " x")
    figure, axes = new_figure()
    axes.bar(["door"], [1234.5])
    save_figure(figure, run.plot_path("throughput"))
    folder = run.finish({"door": {"requests_per_second": 1234.5}},
                        markdown_table(["contender", "req/s"], [["door", 1234.5]]),
                        parameters={"seconds": 1}, notes=["a note"])

    document = json.loads((folder / "results.json").read_text())
    assert document["suite"] == "door" and document["size"] == "tiny"
    assert document["measurements"] == [{"contender": "door", "round": 1,
                                         "figures": {"requests_per_second": 1234.5},
                                         "settings": {"connections": 64}}]
    assert document["targets"][0]["met"] is False
    assert document["plots"] == ["throughput.png"]
    assert (folder / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (folder / "results.md").read_text()
    assert "| door | 1,234 |" in text or "| door | 1,235 |" in text
    assert "| door / plain aiohttp | 0.43 x | >= 0.80 x | NOT met |" in text
    assert "![throughput](throughput.png)" in text and "a note" in text


def _fake_suite(folder: Path, name: str, met: bool) -> None:
    run = BenchRun(name, folder / name)
    run.record(name, 1, requests_per_second=10.0)
    run.target(f"{name} goal", 1.0, 0.5 if met else 2.0, "higher")
    figure, axes = new_figure()
    axes.plot([0, 1], [0, 1])
    save_figure(figure, run.plot_path("curve"))
    run.finish({}, markdown_table(["contender", "req/s"], [[name, 10.0]]))


def test_the_joined_results_keep_each_suite_and_name_a_failed_one(tmp_path: Path) -> None:
    _fake_suite(tmp_path, "door", met=True)
    _fake_suite(tmp_path, "memory", met=False)
    bench_command.join_results(tmp_path, ["door", "memory", "wave"],
                               {"door": 0, "memory": 0, "wave": 1})

    joined = json.loads((tmp_path / "results.json").read_text())
    assert set(joined["suites"]) == {"door", "memory"}
    assert joined["exit_status"] == {"door": 0, "memory": 0, "wave": 1}
    text = (tmp_path / "results.md").read_text()
    assert "| door: door goal | 1 | >= 0.5 | met |" in text
    assert "| memory: memory goal | 1 | >= 2 | NOT met |" in text
    # Plot links are rewritten into the suite's subfolder, so the page shows them.
    assert "![curve](door/curve.png)" in text and "![curve](memory/curve.png)" in text
    assert "## wave" in text and "failed (exit 1)" in text


def test_an_unknown_suite_is_refused_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(suites=["door", "nonsense"], tiny=True, out=tmp_path / "run")
    assert bench_command.run(args) == 2
    assert "unknown suite(s) nonsense" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
