"""The surge report: the summary QA reads, and the plot."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from loadtest.recorder import Merged, percentile
from loadtest.scenarios import Scenario

SHED_THRESHOLD = 0.01  # step-ramp: the knee is the first step shedding over 1 %


def summarise(scenario: Scenario, target: str, merged: Merged, loss: dict[str, Any],
              funnel: list[tuple[float, int, int]]) -> dict[str, Any]:
    """Every figure of the run, as summary.json holds it."""
    seconds = sorted(merged.counts)
    first = seconds[0] if seconds else None
    offered = [merged.counts[s].get("offered", 0) for s in seconds]
    latencies = merged.all_latencies()
    last_stored = loss.get("last_stored_at")
    planned = scenario.planned_arrivals()
    summary: dict[str, Any] = {
        "scenario": scenario.name, "target": target,
        "planned_rate_per_s": round(scenario.rate, 1),
        "seconds": len(seconds),
        # Arrivals against the plan over the whole schedule: a mean over the
        # seconds that saw arrivals would hide a ramp the generator missed.
        "arrivals": {"planned": round(planned, 1), "offered": merged.total("offered"),
                     "share_of_plan": round(merged.total("offered") / planned, 4)
                     if planned else 0.0,
                     "not_offered_generator_full": merged.total("generator_full")},
        "achieved_arrival_rate_per_s": {
            "mean": round(merged.total("offered") / scenario.total_seconds, 1)
            if scenario.total_seconds else 0.0,
            "planned_mean": round(planned / scenario.total_seconds, 1)
            if scenario.total_seconds else 0.0,
            "peak": max(offered, default=0)},
        "sources": merged.sources,
        "offered": merged.total("offered"),
        "admitted": merged.total("admitted"),
        "limited": merged.total("limited"),
        "shed": merged.total("shed"),
        "rejected_invalid": merged.total("rejected"),
        "retries": merged.total("retries"),
        "abandoned": merged.total("abandoned"),
        "errors": merged.total("errors"),
        "unexpected_5xx": merged.total("unexpected_5xx"),
        "contract_mismatches": merged.total("contract_mismatch"),
        "idempotency_mismatches": merged.total("idempotency_mismatch"),
        "status_polls": merged.total("polls"),
        "verification_links_opened": merged.total("verified_links"),
        "reads_unavailable": merged.total("reads_unavailable"),
        "latency_202_ms": {"p50": percentile(latencies, 0.50),
                           "p99": percentile(latencies, 0.99),
                           "max": latencies[-1] if latencies else None},
        "statuses": merged.statuses,
        "loss_check": loss,
        "last_stored_after_start_s": (round(last_stored - first, 1)
                                      if last_stored is not None and first is not None
                                      else None),
        "peak_backlog": max((queued for _, queued, _ in funnel), default=None),
    }
    if scenario.name == "step-ramp":
        summary["steps"] = _steps(scenario, merged, first)
        knee = next((step for step in summary["steps"]
                     if step["shed_share"] > SHED_THRESHOLD), None)
        summary["knee_rate_per_s"] = knee["offered_per_s"] if knee else None
    return summary


def _steps(scenario: Scenario, merged: Merged, first: int | None) -> list[dict[str, Any]]:
    if first is None:
        return []
    steps = []
    for index in range(scenario.steps):
        start = first + int(index * scenario.duration)
        window = [merged.counts.get(s, {}) for s in range(start, start +
                                                         int(scenario.duration))]
        offered = sum(b.get("offered", 0) for b in window)
        turned = sum(b.get("limited", 0) + b.get("shed", 0) for b in window)
        lat = sorted(v for s in range(start, start + int(scenario.duration))
                     for v in merged.latencies.get(s, []))
        steps.append({"step": index + 1,
                      "offered_per_s": round(offered / scenario.duration, 1),
                      "admitted": sum(b.get("admitted", 0) for b in window),
                      "shed_share": round(turned / offered, 4) if offered else 0.0,
                      "p99_ms": percentile(lat, 0.99)})
    return steps


def render(summary: dict[str, Any]) -> str:
    """The lines printed at the end of a run."""
    loss = summary["loss_check"]
    latency = summary["latency_202_ms"]
    rate = summary["achieved_arrival_rate_per_s"]
    arrivals = summary["arrivals"]
    lines = [
        f"== surge {summary['scenario']} against {summary['target']}",
        f"arrivals       {arrivals['offered']:,} of {arrivals['planned']:,.0f} planned "
        f"({arrivals['share_of_plan']:.1%}); mean {rate['mean']:,.1f}/s of "
        f"{rate['planned_mean']:,.1f}/s planned (plateau {summary['planned_rate_per_s']:,.1f}/s),"
        f" peak {rate['peak']:,}/s",
        f"offered        {summary['offered']:,} applications ({summary['retries']:,} retries, "
        f"{summary['abandoned']:,} given up when the page was left)",
        f"admitted       {summary['admitted']:,} (202)",
        f"limited        {summary['limited']:,} (429)    shed {summary['shed']:,} (503)",
        f"invalid        {summary['rejected_invalid']:,} (400/422, as the contract says; "
        f"{summary['contract_mismatches']} differed)",
        f"errors         {summary['errors']:,}    unexpected 5xx "
        f"{summary['unexpected_5xx']:,}",
        f"latency 202    p50 {_ms(latency['p50'])}  p99 {_ms(latency['p99'])}",
        f"polls          {summary['status_polls']:,}    verification links opened "
        f"{summary['verification_links_opened']:,}    busy 503 on reads "
        f"{summary['reads_unavailable']:,}",
    ]
    if summary.get("knee_rate_per_s") is not None:
        lines.append(f"knee           shedding over 1 % from {summary['knee_rate_per_s']:,}/s")
    if summary["last_stored_after_start_s"] is not None:
        lines.append(f"last stored    {summary['last_stored_after_start_s']} s after the "
                     "first arrival")
    if arrivals["not_offered_generator_full"]:
        lines.append(f"generator      {arrivals['not_offered_generator_full']:,} arrivals not "
                     "offered: applicants in flight at the bound (--max-in-flight)")
    if len(summary["sources"]) > 1:
        lines.append("workers        " + ", ".join(
            f"{totals.get('offered', 0):,} offered / {totals.get('admitted', 0):,} admitted"
            for _, totals in sorted(summary["sources"].items())))
    if loss.get("error"):
        lines.append(f"loss check     NOT RUN: {loss['error']} ({loss['method']})")
    else:
        verdict = "OK" if loss["missing"] == 0 else "FAILED"
        lines.append(f"loss check     {verdict}: {loss['stored']:,} of {loss['admitted']:,} "
                     f"admitted are stored, {loss['missing']:,} missing ({loss['method']})")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def plot(path: Path, scenario: Scenario, merged: Merged,
         funnel: list[tuple[float, int, int]]) -> None:
    """Three panels over the run's seconds: rates, latency, backlog and drain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = sorted(merged.counts)
    start = seconds[0] if seconds else 0
    xs = [s - start for s in seconds]
    figure, (rates, latency, queue) = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    for outcome, colour in (("offered", "tab:blue"), ("admitted", "tab:green"),
                            ("limited", "tab:orange"), ("shed", "tab:red")):
        rates.plot(xs, [merged.counts[s].get(outcome, 0) for s in seconds], label=outcome,
                   color=colour)
    rates.plot(xs, [scenario.rate_at(x) or 0 for x in xs], "--", color="grey",
               label="planned")
    rates.set_ylabel("per second")
    rates.set_title(f"surge {scenario.name}")
    rates.legend(loc="upper right")
    for share, style in ((0.5, "-"), (0.99, "--")):
        latency.plot(xs, [percentile(sorted(merged.latencies.get(s, [])), share) or 0
                          for s in seconds], style, label=f"p{int(share * 100)} of 202s")
    latency.set_ylabel("ms")
    latency.legend(loc="upper right")
    if funnel:
        times = [t - start for t, _, _ in funnel]
        queue.plot(times, [queued for _, queued, _ in funnel], label="backlog (queued)")
        drained = [0] + [max(0, b[2] - a[2]) / max(1e-3, b[0] - a[0])
                         for a, b in itertools.pairwise(funnel)]
        queue.plot(times, drained, label="stored per second")
        queue.legend(loc="upper right")
    queue.set_xlabel("seconds since the first arrival")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
