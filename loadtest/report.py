"""The surge report: the summary QA reads, and the plot.

An `opening-crush` adds the waiting room's figures (`crush_summary`, from
the applicants' journeys and the door's readings; rendered by `crush_lines`).
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import Any

from loadtest import fairness
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
    if "crush" in summary:
        lines += crush_lines(summary["crush"])
    return "\n".join(lines)


def crush_summary(scenario: Scenario, merged: Merged, wave: dict[str, Any],
                  door: dict[str, Any]) -> dict[str, Any]:
    """The waiting room's figures: exactly once, order, waits against ETAs, polls, the door."""
    journeys = merged.journeys
    once = fairness.exactly_once({j["registrant"]: j["registration_ids"] for j in journeys})
    admitted = [j for j in journeys if j["admitted_at"] is not None]
    ranked = [j for j in admitted if j["position"] is not None]
    positions = [int(j["position"]) for j in ranked]
    times = [float(j["admitted_at"]) for j in ranked]
    late = fairness.late_admissions(positions, times)
    # After the opening the line is in arrival order: joining time against position.
    joined_later = [j for j in journeys if not j["prequeue"] and j["position"] is not None
                    and j["joined_at"] is not None]
    placed = [j for j in admitted if j["placed_eta"] is not None and j["placed_at"] is not None]
    waited = [j["admitted_at"] - j["placed_at"] for j in placed]
    polls = [ms for j in journeys for ms in j["poll_ms"]]
    advised = [float(j["poll_after"]) for j in journeys if j["poll_after"] is not None]
    return {
        "wave": wave,
        "registrants_planned": scenario.registrants,
        "admission_rate_per_s": round(scenario.admission_rate, 2),
        "registrants": len(journeys),
        "with_three_tabs": sum(1 for j in journeys if j["tabs"] > 1),
        "joined_prequeue": sum(1 for j in journeys if j["prequeue"]),
        "joined_after_opening": sum(1 for j in journeys
                                    if j["joined_at"] is not None and not j["prequeue"]),
        "admitted_without_a_place": sum(1 for j in admitted if j["position"] is None),
        "rejoins": sum(j["rejoins"] for j in journeys),
        "more_than_one_ticket_id": sum(1 for j in journeys if len(j["ticket_ids"]) > 1),
        "exactly_once": {"registrants": once.registrants, "admitted_once": once.admitted_once,
                         "admitted_more": once.admitted_more, "lost": once.lost,
                         "shared_ids": once.shared_ids,
                         "unrecorded": max(0, merged.total("offered") - len(journeys))},
        "order": {"ranked": len(ranked),
                  "kendall_tau": _rounded(fairness.kendall_tau(positions, times), 5),
                  "duplicate_positions": len(positions) - len(set(positions)),
                  "late": late.late, "worst_lateness_s": round(late.worst_seconds, 3),
                  "worst_late_position": late.worst_position,
                  "allowance_s": late.allowance_seconds,
                  "arrival_order_tau_after_opening": _rounded(fairness.kendall_tau(
                      [j["joined_at"] for j in joined_later],
                      [j["position"] for j in joined_later]), 5)},
        "wait_from_joining_s": fairness.percentiles(
            (j["admitted_at"] - j["joined_at"] for j in admitted if j["joined_at"] is not None),
            (0.5, 0.9)),
        "wait_from_first_placed_eta_s": fairness.percentiles(waited, (0.5, 0.9)),
        "first_placed_eta_s": {
            "p50": _rounded(percentile(sorted(j["placed_eta"][0] for j in placed), 0.5), 1),
            "p90": _rounded(percentile(sorted(j["placed_eta"][1] for j in placed), 0.9), 1)},
        "eta_error": {**fairness.percentiles(
            (fairness.eta_error(wait, j["placed_eta"][0]) for wait, j in zip(waited, placed,
                                                                               strict=True)),
            (0.5, 0.9), digits=4), "measured": len(placed)},
        "within_eta_p90_share": (round(sum(1 for wait, j in zip(waited, placed, strict=True)
                                           if wait <= j["placed_eta"][1]) / len(placed), 4)
                                 if placed else None),
        "polls": _poll_figures(scenario, merged, journeys, polls, advised),
        "door": door,
    }


def _poll_figures(scenario: Scenario, merged: Merged, journeys: list[dict[str, Any]],
                  latencies: list[float], advised: list[float]) -> dict[str, Any]:
    per_second = [bucket.get("queue_polls", 0) for bucket in merged.counts.values()
                  if bucket.get("queue_polls")]
    interval = statistics.median(advised) if advised else None
    return {"total": len(latencies),
            # What the interval costs: everyone in line polls once an interval.
            "full_line_per_s": round(scenario.registrants / interval, 1) if interval else None,
            "per_registrant": round(len(latencies) / len(journeys), 2) if journeys else None,
            "per_second_peak": max(per_second, default=0),
            "per_second_mean": (round(sum(per_second) / len(per_second), 1)
                                if per_second else 0.0),
            "advised_interval_s": interval,
            "refused": merged.total("queue_polls_refused"),
            "latency_ms": fairness.percentiles(latencies, (0.5, 0.9, 0.99), digits=2)}


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def crush_lines(crush: dict[str, Any]) -> list[str]:
    """The waiting room's part of the printed report."""
    wave, once, order = crush["wave"], crush["exactly_once"], crush["order"]
    polls, door = crush["polls"], crush["door"]
    verdict = "OK" if not (once["admitted_more"] or once["shared_ids"] or once["lost"]
                           or once["unrecorded"]) else "FAILED"
    wait, eta_wait, eta = (crush["wait_from_joining_s"], crush["wait_from_first_placed_eta_s"],
                           crush["first_placed_eta_s"])
    error = crush["eta_error"]
    latency = polls["latency_ms"]
    full_line = polls["full_line_per_s"]
    lines = [
        f"crush          wave {wave['wave']}: opening {wave['opens_at'] - wave['prequeue_from']}"
        f" s after the pre-queue; admission {crush['admission_rate_per_s']:,.1f}/s; "
        f"{crush['registrants']:,} registrants of {crush['registrants_planned']:,} "
        f"({crush['with_three_tabs']:,} with three tabs)",
        f"joined         {crush['joined_prequeue']:,} in the pre-queue (the lottery), "
        f"{crush['joined_after_opening']:,} after the opening; {crush['rejoins']:,} rejoins; "
        f"{crush['admitted_without_a_place']:,} admitted without a place",
        f"exactly once   {verdict}: {once['admitted_once']:,} of {once['registrants']:,} "
        f"admitted once; {once['admitted_more']:,} more than once, {once['lost']:,} lost, "
        f"{once['shared_ids']:,} ids shared, {once['unrecorded']:,} unrecorded",
        f"order          Kendall tau {_tau(order['kendall_tau'])} over {order['ranked']:,} "
        f"admitted with a place ({order['duplicate_positions']:,} positions given twice); "
        f"joining vs position after the opening {_tau(order['arrival_order_tau_after_opening'])}",
        f"late           {order['late']:,} admitted more than {order['allowance_s']:g} s after "
        f"someone behind them (worst {order['worst_lateness_s']:.1f} s)",
        f"wait           from joining p50 {_s(wait['p50'])} p90 {_s(wait['p90'])}; from the "
        f"first ETA with a place p50 {_s(eta_wait['p50'])} p90 {_s(eta_wait['p90'])}, that ETA "
        f"p50 {_s(eta['p50'])} p90 {_s(eta['p90'])}",
        f"ETA error      p50 {_pct(error['p50'])} p90 {_pct(error['p90'])} over "
        f"{error['measured']:,}; admitted within the ETA's p90: "
        f"{_pct(crush['within_eta_p90_share'])}",
        f"polls          {polls['total']:,} ({polls['per_registrant'] or 0:g} a registrant, "
        f"advised every {_s(polls['advised_interval_s'])}: "
        f"{'n/a' if full_line is None else f'{full_line:,.0f}'}/s with all "
        f"{crush['registrants_planned']:,} in line): {polls['per_second_peak']:,}/s peak, "
        f"{polls['per_second_mean']:,.1f}/s mean; {polls['refused']:,} refused",
        f"poll latency   p50 {_ms(latency['p50'])} p90 {_ms(latency['p90'])} p99 "
        f"{_ms(latency['p99'])} max {_ms(latency['max'])} (seen by Locust)",
    ]
    return lines + _door_lines(door, full_line)


def _door_lines(door: dict[str, Any], full_line: float | None) -> list[str]:
    if door["redis_calls_per_poll"] is None:
        redis = ("Redis round trips per poll: not measured (no gelombang_queue_redis_calls_total"
                 " and gelombang_queue_tickets_total{event=polled} on the admin port's /metrics)")
    else:
        redis = (f"Redis round trips per poll: {door['redis_calls_per_poll']:.4f} "
                 f"({door['redis_calls']:,.0f} calls for tickets / {door['queue_polls']:,.0f} "
                 f"polls answered; " + ", ".join(
                     f"{label} {calls:,.0f}"
                     for label, calls in door["redis_calls_by_label"].items()) + ")")
    if door["cpu_seconds"] is None:
        cpu = "CPU: not measured (no door process of this machine reported its pid)"
    else:
        per_poll = door["cpu_ms_per_poll_at_most"]
        cores = ("" if per_poll is None or full_line is None
                 else f"; all in line: at most {per_poll * full_line / 1000:,.2f} cores")
        cpu = (f"CPU: {door['cpu_seconds']:,.1f} s over {door['door_processes_measured']} "
               f"process(es), at most {per_poll} ms a poll (registrations included){cores}")
    routes = ", ".join(f"{route} p99 {_bucket(figures)} ({figures['answers']:,} answers)"
                       for route, figures in door["ticket_routes"].items())
    return [f"door           {redis}", f"door           {cpu}",
            f"door p99       {routes or 'not measured (no ticket route on /metrics)'}"]


def _bucket(figures: dict[str, Any]) -> str:
    """A p99 read from histogram buckets: at most a bound, or over the last one."""
    if figures["p99_ms_at_most"] is not None:
        return f"<= {_ms(figures['p99_ms_at_most'])}"
    return f"> {_ms(figures.get('p99_over_ms'))}"


def _tau(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} s"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


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
