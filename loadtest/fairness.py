"""Was the waiting room fair? Order, lateness, exactly-once and ETA figures of a crush.

Pure functions over what the applicants recorded (`loadtest/waiting_room.py`),
for the `opening-crush` report and its thresholds (docs/surge.md). N is
30,000 on one machine and 300,000 at production scale, so everything here
is O(n log n): no pair of people is ever compared directly.

Admission order is judged against queue position (the lottery's order for the
pre-queue, arrival order after the opening): Kendall's tau between the two,
and "late admissions", people admitted more than an allowance (2 s) after
someone with a later position was admitted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from loadtest.recorder import percentile

# No one may be admitted more than this long after someone behind them.
LATE_ALLOWANCE_SECONDS: Final = 2.0
# The ETA error's denominator never goes below this: the first in line wait
# well under a second, and an error relative to nothing says nothing.
ETA_ERROR_FLOOR_SECONDS: Final = 1.0


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's tau-b between two equally long sequences; None when undefined.

    Ties: tau-b, so a pair tied in x or in y counts as neither concordant nor
    discordant, and the denominator leaves out the tied pairs of each side
    (`(C - D) / sqrt((n0 - n1)(n0 - n2))`, n1 and n2 the pairs tied in x and
    in y). Undefined (None) with fewer than two items, or when either side is
    all one value. Knight's O(n log n) method: sort by (x, y), then count
    the discordant pairs as the inversions left in y, by a merge sort.
    """
    if len(xs) != len(ys):
        raise ValueError("kendall_tau needs two sequences of one length")
    n = len(xs)
    if n < 2:
        return None
    pairs = sorted(zip(xs, ys, strict=True))
    total = n * (n - 1) // 2
    tied_x = _tied_pairs(x for x, _ in pairs)
    tied_both = _tied_pairs(pairs)
    in_y_order = [y for _, y in pairs]
    discordant = _inversions(in_y_order)  # sorts in_y_order in place
    tied_y = _tied_pairs(in_y_order)
    if tied_x == total or tied_y == total:
        return None
    difference = total - tied_x - tied_y + tied_both - 2 * discordant
    return difference / math.sqrt((total - tied_x) * (total - tied_y))


def _tied_pairs(values: Iterable[object]) -> int:
    """Pairs of equal neighbours' runs in sorted values: sum of t(t-1)/2 per run."""
    pairs, run, previous, first = 0, 0, None, True
    for value in values:
        if not first and value == previous:
            run += 1
        else:
            pairs += run * (run + 1) // 2
            run = 0
        previous, first = value, False
    return pairs + run * (run + 1) // 2


def _inversions(values: list[float]) -> int:
    """Pairs i < j with values[i] > values[j] (strictly); sorts `values` in place.

    A bottom-up merge sort: no recursion, one scratch list.
    """
    n = len(values)
    scratch = values[:]
    count, width = 0, 1
    source, target = values, scratch
    while width < n:
        for low in range(0, n, 2 * width):
            middle, high = min(low + width, n), min(low + 2 * width, n)
            i, j, k = low, middle, low
            while i < middle and j < high:
                if source[j] < source[i]:
                    target[k] = source[j]
                    count += middle - i  # everything left in the left run is bigger
                    j += 1
                else:
                    target[k] = source[i]
                    i += 1
                k += 1
            target[k:high] = source[i:middle] if i < middle else source[j:high]
        source, target = target, source
        width *= 2
    if source is not values:
        values[:] = source
    return count


@dataclass(frozen=True)
class Lateness:
    """Who was admitted after someone behind them, and by how much at worst."""

    late: int                        # admitted more than the allowance after someone behind
    worst_seconds: float             # the largest such delay (0.0: no one behind went first)
    worst_position: int | None       # whose it was
    allowance_seconds: float


def late_admissions(positions: Sequence[int], admitted_at: Sequence[float],
                    allowance: float = LATE_ALLOWANCE_SECONDS) -> Lateness:
    """People admitted more than `allowance` s after someone with a later position was.

    "Later" is strictly greater: two people at one position (which the door
    must never hand out) are not each other's "behind". A delay of exactly
    the allowance is not late.
    """
    if len(positions) != len(admitted_at):
        raise ValueError("late_admissions needs one admission time per position")
    people = sorted(zip(positions, admitted_at, strict=True), reverse=True)
    earliest_behind = math.inf
    late, worst, worst_position = 0, 0.0, None
    index = 0
    while index < len(people):
        position = people[index][0]
        group_end = index
        while group_end < len(people) and people[group_end][0] == position:
            group_end += 1
        group = people[index:group_end]
        for _, at in group:
            delay = at - earliest_behind
            if delay > worst:
                worst, worst_position = delay, position
            if delay > allowance:
                late += 1
        earliest_behind = min(earliest_behind, *(at for _, at in group))
        index = group_end
    return Lateness(late, worst, worst_position, allowance)


@dataclass(frozen=True)
class ExactlyOnce:
    """Every registrant admitted once and only once, nobody lost."""

    registrants: int
    admitted_once: int
    admitted_more: int   # answered with two or more registration ids
    lost: int            # never answered with a registration id
    shared_ids: int      # registration ids answered to two or more registrants

    @property
    def ok(self) -> bool:
        """Whether everyone was admitted exactly once, with an id of their own."""
        return self.admitted_more == self.lost == self.shared_ids == 0


def exactly_once(registration_ids: Mapping[str, Iterable[str]]) -> ExactlyOnce:
    """Judge registrant → the registration ids their answers carried (202, 409, registered).

    The same id seen several times (a 202, then `ticket_used` in another
    tab) is one admission; two ids for one registrant are two.
    """
    once = more = lost = 0
    owners: dict[str, int] = {}
    for ids in registration_ids.values():
        distinct = set(ids)
        if not distinct:
            lost += 1
        elif len(distinct) == 1:
            once += 1
        else:
            more += 1
        for registration_id in distinct:
            owners[registration_id] = owners.get(registration_id, 0) + 1
    shared = sum(1 for count in owners.values() if count > 1)
    return ExactlyOnce(len(registration_ids), once, more, lost, shared)


def eta_error(wait_seconds: float, eta_p50_seconds: float) -> float:
    """|actual wait - the ETA's p50| / actual wait (the wait floored at 1 s)."""
    return abs(wait_seconds - eta_p50_seconds) / max(wait_seconds, ETA_ERROR_FLOOR_SECONDS)


def percentiles(values: Iterable[float], shares: Sequence[float] = (0.5, 0.9, 0.99),
                digits: int = 3) -> dict[str, float | None]:
    """Nearest-rank percentiles keyed `p50`, `p90`, …, and `max`; None when empty."""
    ordered = sorted(values)
    result: dict[str, float | None] = {}
    for share in shares:
        value = percentile(ordered, share)
        result[f"p{share * 100:g}"] = None if value is None else round(value, digits)
    result["max"] = round(ordered[-1], digits) if ordered else None
    return result
