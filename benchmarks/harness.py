"""What every suite of `gelombang bench` shares: rounds, progress, targets, results.

A suite measures contenders alternately (A B A B …) so that drift on a noisy
machine hits all of them, records one `Measurement` per contender and round,
and ends with `BenchRun.finish`, which writes `results.json`, `results.md`
and whatever PNG plots the suite drew into the run's folder.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from benchmarks import stack
from gelombang.capacity_figures import write_figures

Better = Literal["higher", "lower"]
T = TypeVar("T")


@dataclass(frozen=True)
class Measurement:
    """What one contender did in one round (figures by name: `requests_per_second`…)."""

    contender: str
    round: int
    figures: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """A goal the issue sets, and whether this run met it."""

    name: str
    value: float
    goal: float
    better: Better
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value >= self.goal if self.better == "higher" else self.value <= self.goal

    def line(self) -> str:
        sign = ">=" if self.better == "higher" else "<="
        verdict = "met" if self.met else "NOT met"
        return (f"| {self.name} | {_figure(self.value)}{self.unit} | {sign} "
                f"{_figure(self.goal)}{self.unit} | {verdict} |")


class BenchRun:
    """One suite's run: its folder, its progress lines, its measurements and targets."""

    def __init__(self, suite: str, folder: Path | None = None, *, size: str = "full") -> None:
        self.suite, self.size = suite, size
        if folder is None:
            self.folder = stack.result_folder(suite)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            self.folder = folder
        self.measurements: list[Measurement] = []
        self.targets: list[Target] = []
        self.plots: list[Path] = []
        self._started = time.monotonic()

    def progress(self, message: str) -> None:
        """A progress line with the time since the suite started (stderr, flushed)."""
        elapsed = int(time.monotonic() - self._started)
        print(f"[{self.suite} {elapsed // 60:02d}:{elapsed % 60:02d}] {message}",
              file=sys.stderr, flush=True)

    def record(self, contender: str, round_number: int, settings: dict[str, Any] | None = None,
               **figures: float) -> Measurement:
        """Keep one contender's figures for one round."""
        measurement = Measurement(contender, round_number, dict(figures), dict(settings or {}))
        self.measurements.append(measurement)
        return measurement

    def target(self, name: str, value: float, goal: float, better: Better,
               unit: str = "") -> Target:
        """Compare a figure of this run with the issue's goal."""
        target = Target(name, value, goal, better, unit)
        self.targets.append(target)
        return target

    def plot_path(self, name: str) -> Path:
        """Where a suite saves a PNG (listed in results.json and results.md)."""
        path = self.folder / f"{name}.png"
        self.plots.append(path)
        return path

    def medians(self, settings_key: str | None = None) -> dict[str, dict[str, float]]:
        """Median of every figure per contender (and per value of one setting, if given)."""
        groups: dict[str, list[Measurement]] = {}
        for m in self.measurements:
            key = m.contender if settings_key is None else \
                f"{m.contender} @ {m.settings.get(settings_key)}"
            groups.setdefault(key, []).append(m)
        return {key: median_figures(ms) for key, ms in groups.items()}

    def finish(self, summary: dict[str, Any], table: str, *,
               parameters: dict[str, Any] | None = None, notes: Sequence[str] = (),
               figures: Mapping[str, float] | None = None) -> Path:
        """Write results.json and results.md (and figures.json, `gelombang plan`'s); the folder."""
        finished_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        machine = stack.machine()
        document = {
            "suite": self.suite, "size": self.size, "machine": machine,
            "finished_at": finished_at,
            "seconds": round(time.monotonic() - self._started, 1),
            "parameters": parameters or {},
            "measurements": [asdict(m) for m in self.measurements],
            "summary": summary,
            "targets": [asdict(t) | {"met": t.met} for t in self.targets],
            "plots": [p.name for p in self.plots if p.exists()],
        }
        stack.write_json(self.folder / "results.json", document)
        (self.folder / "results.md").write_text(self.markdown(table, notes))
        # A --tiny run checks the harness and measures nothing: no figures to plan with.
        if figures and self.size != "tiny":
            write_figures(self.folder, self.suite, figures, machine, finished_at)
        return self.folder

    def markdown(self, table: str, notes: Sequence[str] = ()) -> str:
        """The suite's section: machine, table, targets, plots, notes."""
        machine = stack.machine()
        lines = [f"## {self.suite}", "",
                 f"{machine['cpu']}, {machine['cores']} cores, {machine['os']} "
                 f"{machine['kernel']}; size {self.size}; "
                 f"{sum(1 for _ in dict.fromkeys(m.round for m in self.measurements))} round(s).",
                 "", table.rstrip("\n"), ""]
        if self.targets:
            lines += ["| target | this run | goal | |", "|---|---:|---:|---|",
                      *(t.line() for t in self.targets), ""]
        lines += [f"![{p.stem}]({p.name})" for p in self.plots if p.exists()]
        lines += ["", *notes]
        return "\n".join(lines).rstrip("\n") + "\n"


def print_results(folder: Path, failures: Sequence[str] = ()) -> int:
    """Show a finished suite's results.md and folder, and its failed checks; the exit status."""
    print((folder / "results.md").read_text())
    print(f"results in {folder}")
    for failure in failures:
        print(f"CHECK FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def alternate(contenders: Sequence[T], rounds: int) -> Iterator[tuple[int, T]]:
    """(round, contender) in the order A B A B …, rounds numbered from 1."""
    for number in range(1, rounds + 1):
        for contender in contenders:
            yield number, contender


def median_figures(measurements: Sequence[Measurement]) -> dict[str, float]:
    """Median of each figure over the given measurements."""
    names = dict.fromkeys(name for m in measurements for name in m.figures)
    return {name: statistics.median(m.figures[name] for m in measurements if name in m.figures)
            for name in names}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; numbers right-aligned and rounded for reading."""
    align = ["---" if not rows or not isinstance(rows[0][i], (int, float)) else "---:"
             for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_figure(cell) if isinstance(cell, (int, float)) else str(cell)
                                for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _figure(value: float) -> str:
    if isinstance(value, int) or (abs(value) >= 100 and float(value).is_integer()):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def new_figure(width: float = 7.0, height: float = 4.0) -> Any:
    """A matplotlib figure drawn off-screen (no display on a server)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot.subplots(figsize=(width, height), dpi=100)


def save_figure(figure: Any, path: Path) -> None:
    """Save small (committed PNGs stay small) and free the figure's memory."""
    from matplotlib import pyplot

    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)
