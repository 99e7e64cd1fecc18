"""Pass or fail: what a surge must show for QA to trust it.

A run passes when it offered at least `min_arrival_share` of the arrivals
its schedule planned (a load generator that fell short tested a smaller
wave than the one named, so its figures say nothing about the named one),
the p99 of its 202 answers is within `p99_budget_ms`, and not one admitted
registration is missing. Broken contract answers (an unexpected 5xx, a 422
with other field codes, a double submit answered with another id) and a
failed Locust fail it too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final


@dataclass(frozen=True)
class Thresholds:
    """One scenario's pass marks."""

    min_arrival_share: float = 0.95
    p99_budget_ms: float = 1000.0


# The door answers a 202 within milliseconds at the 2020 peak
# (docs/latency.md); a second leaves room for the load generator sharing the
# machine. A step-ramp climbs past the knee on purpose, where answers slow
# down before the door sheds, so its budget is wider.
DEFAULTS: Final = {
    "opening-wave": Thresholds(),
    "step-ramp": Thresholds(p99_budget_ms=2000.0),
    "soak": Thresholds(),
    "retry-storm": Thresholds(),
}


def for_scenario(name: str, min_arrival_share: float | None = None,
                 p99_budget_ms: float | None = None) -> Thresholds:
    """The scenario's defaults, with the command line's changes."""
    given = {"min_arrival_share": min_arrival_share, "p99_budget_ms": p99_budget_ms}
    return replace(DEFAULTS[name], **{k: v for k, v in given.items() if v is not None})


def failures(summary: dict[str, Any], marks: Thresholds, locust_status: int) -> list[str]:
    """Why the run failed, one short clause each; empty when it passed."""
    reasons = []
    arrivals = summary["arrivals"]
    if arrivals["share_of_plan"] < marks.min_arrival_share:
        reasons.append(
            f"arrivals reached {arrivals['share_of_plan']:.0%} of the plan ({arrivals['offered']:,}"
            f" of {arrivals['planned']:,.0f}; at least {marks.min_arrival_share:.0%} needed)")
    p99 = summary["latency_202_ms"]["p99"]
    if p99 is None:
        reasons.append("no application was answered 202")
    elif p99 > marks.p99_budget_ms:
        reasons.append(f"p99 of 202s {p99:,.0f} ms, over the budget of "
                       f"{marks.p99_budget_ms:,.0f} ms")
    loss = summary["loss_check"]
    if loss.get("error"):
        reasons.append(f"the loss check could not run ({loss['error']})")
    elif loss["missing"]:
        reasons.append(f"{loss['missing']:,} of {loss['admitted']:,} admitted registrations "
                       "are not stored")
    for key, what in (("unexpected_5xx", "unexpected 5xx answers"),
                      ("contract_mismatches", "422s with other field codes than the contract's"),
                      ("idempotency_mismatches", "double submits answered with another id")):
        if summary[key]:
            reasons.append(f"{summary[key]:,} {what}")
    if locust_status != 0:
        reasons.append(f"Locust exited with status {locust_status} (see locust.log)")
    return reasons


def verdict_line(summary: dict[str, Any], marks: Thresholds, reasons: list[str]) -> str:
    """The run's last line: PASSED with the figures against their marks, or FAILED and why."""
    if reasons:
        return "surge FAILED: " + "; ".join(reasons)
    p99 = summary["latency_202_ms"]["p99"]
    return (f"surge PASSED: arrivals {summary['arrivals']['share_of_plan']:.0%} of the plan "
            f"(>= {marks.min_arrival_share:.0%}), p99 of 202s {p99:,.0f} ms "
            f"(<= {marks.p99_budget_ms:,.0f} ms), 0 lost")
