"""`gelombang plan`: the fleet an opening takes, from the benchmarks' per-registration figures.

    gelombang plan --rate 2000000/min --ministry 1500/s --relay 500/s
                   [--duration 10min | --volume N] [--cores 16] [--utilisation 60]
                   [--results DIR | --defaults] [--json]

Figures are the newest each benchmark suite kept in a figures.json under the
results folder (benchmarks/results), else the documented defaults measured on
the 2-core development VM; every figure is listed with where it came from.
Exit status: 0 with a plan, 2 for bad input, 3 for an unreadable figures file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from gelombang.capacity import Plan, PlanInputs, make_plan
from gelombang.capacity_figures import RESULTS_FOLDER, FiguresError, load_figures

EXIT_BAD_FIGURES: Final = 3
_PER: Final = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
_SCALE: Final = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6}
_NUMBER: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([kKM]?)")


def _number(text: str, what: str) -> float:
    """`2000000`, `2,000,000`, `80k`, `1.5M` → the number."""
    match = _NUMBER.fullmatch(text.strip().replace(",", "").replace("_", ""))
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{what}: {text!r} is not a number (like 1500, 80k or 2M)")
    return float(match[1]) * _SCALE[match[2]]


def parse_rate(text: str) -> float:
    """`2000000/min`, `1500/s`, `80k/min` → per second; a unit is required."""
    value, slash, unit = text.partition("/")
    if not slash or unit.strip() not in _PER:
        raise argparse.ArgumentTypeError(
            f"rate {text!r}: give a count per unit, like 1500/s, 80k/min or 2M/h "
            f"(units: {', '.join(_PER)})")
    rate = _number(value, f"rate {text!r}") / _PER[unit.strip()]
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"rate {text!r}: must be above zero")
    return rate


def parse_duration(text: str) -> float:
    """`90s`, `10min`, `1h` → seconds; a unit is required."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(s|sec|min|h|hour)\s*", text)
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"duration {text!r}: give a positive time like 90s, 10min or 1h")
    return float(match[1]) * _PER[match[2]]


def parse_volume(text: str) -> int:
    """`20000000`, `20M`, `1.43M` → registrations."""
    volume = int(_number(text, "volume"))
    if volume <= 0:
        raise argparse.ArgumentTypeError(f"volume {text!r}: must be above zero")
    return volume


def parse_utilisation(text: str) -> float:
    """`60`, `60%` or `0.6` → 0.6; above 0 and at most 100 %."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"utilisation {text!r}: a share like 60% or 0.6") from None
    share = value / 100 if value > 1 else value
    if not 0 < share <= 1:
        raise argparse.ArgumentTypeError(f"utilisation {text!r}: must be above 0 and at most 100%")
    return share


def parse_cores(text: str) -> int:
    """A positive whole number of cores."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"cores {text!r}: a whole number, at least 1")
    return int(text)


def register(subparsers: Any) -> None:
    """Add `gelombang plan` to the command line."""
    parser = subparsers.add_parser(
        "plan", help="the fleet an opening takes, from the benchmarks' figures",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=parse_rate, required=True,
                        help="peak arrivals: 2000000/min, 80k/min, 1500/s")
    parser.add_argument("--ministry", type=parse_rate, required=True,
                        help="NIK checks the ministry allows: 1500/s")
    parser.add_argument("--relay", type=parse_rate, required=True,
                        help="emails the relay allows: 500/s")
    wave = parser.add_mutually_exclusive_group()
    wave.add_argument("--duration", type=parse_duration, default=None,
                      help="how long the peak lasts (default 10min): volume = rate x duration")
    wave.add_argument("--volume", type=parse_volume, default=None,
                      help="registrations in the wave, instead of --duration: 20M")
    parser.add_argument("--cores", type=parse_cores, default=16, help="cores per machine")
    parser.add_argument("--utilisation", type=parse_utilisation, default=0.6,
                        help="target busy share of each core (default 60%%)")
    figures = parser.add_mutually_exclusive_group()
    figures.add_argument("--results", type=Path, default=RESULTS_FOLDER,
                         help="folder of benchmark results to read figures.json from "
                              "(default: benchmarks/results)")
    figures.add_argument("--defaults", action="store_true",
                         help="the documented default figures only, whatever was measured here")
    parser.add_argument("--json", action="store_true", help="the plan as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Read the figures, make the plan, print it."""
    try:
        figures = load_figures(None if args.defaults else args.results)
    except FiguresError as exc:
        print(f"gelombang plan: {exc}", file=sys.stderr)
        return EXIT_BAD_FIGURES
    duration = args.duration if args.duration is not None else 600.0
    volume = args.volume if args.volume is not None else round(args.rate * duration)
    plan = make_plan(PlanInputs(rate=args.rate, volume=volume, ministry=args.ministry,
                                relay=args.relay, cores=args.cores,
                                utilisation=args.utilisation), figures)
    print(json.dumps(as_json(plan), indent=2) if args.json else as_text(plan))
    return 0


def as_json(plan: Plan) -> dict[str, Any]:
    """The plan as one JSON document: inputs, lines, figures with their sources."""
    return {"inputs": asdict(plan.inputs),
            "lines": [asdict(line) for line in plan.lines],
            "figures": {name: {"value": figure.value, "unit": figure.unit,
                               "measured": figure.measured, "source": figure.source}
                        for name, figure in plan.figures.items()}}


def _value(value: float, unit: str) -> str:
    if unit in {"s"}:
        return f"{value:,.0f} s ({value / 60:,.1f} min)"
    if unit in {"GiB", "MiB"}:
        return f"{value:,.1f} {unit}"
    return f"{value:,.0f} {unit}"


def as_text(plan: Plan) -> str:
    """The plan as a table to read: the inputs, one row per line, then the figures used."""
    i = plan.inputs
    out = [f"Capacity plan: {i.rate * 60:,.0f}/min ({i.rate:,.0f}/s) for "
           f"{i.volume / i.rate:,.0f} s = {i.volume:,} registrations; "
           f"ministry {i.ministry:,.0f}/s, relay {i.relay:,.0f}/s; "
           f"{i.cores}-core machines at {i.utilisation:.0%} utilisation", ""]
    rows = [(line.section, line.what, _value(line.value, line.unit), line.formula)
            for line in plan.lines]
    widths = [max(len(row[n]) for row in rows) for n in range(3)]
    for row in rows:
        out.append(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  "
                   f"{row[3]}")
    out += ["", "Figures (per registration unless stated):"]
    for figure in plan.figures.values():
        kind = "measured" if figure.measured else "DEFAULT"
        out.append(f"  {figure.name} = {figure.value:,.4g} {figure.unit} [{kind}: "
                   f"{figure.source.removeprefix('default: ')}]")
    out += ["", "Assumed, not measured: per-core figures from the benchmarks' machine hold on "
            "these machines and scale by cores; Redis host memory = 2 x used_memory; "
            "every registration accepted (two checks each); verification's PostgreSQL and "
            "Redis cost split evenly between the email and NIK checks."]
    return "\n".join(out)
