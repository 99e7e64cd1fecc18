"""The waiting room's fairness figures, on hand-checked cases."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from loadtest.fairness import (
    ExactlyOnce,
    eta_error,
    exactly_once,
    kendall_tau,
    late_admissions,
    percentiles,
)


def brute_tau_b(xs: list[float], ys: list[float]) -> float | None:
    """Kendall's tau-b by comparing every pair (the definition)."""
    concordant = discordant = tied_x = tied_y = 0
    for (x1, y1), (x2, y2) in itertools.combinations(zip(xs, ys, strict=True), 2):
        if x1 == x2:
            tied_x += 1
        if y1 == y2:
            tied_y += 1
        if x1 == x2 or y1 == y2:
            continue
        if (x1 < x2) == (y1 < y2):
            concordant += 1
        else:
            discordant += 1
    total = len(xs) * (len(xs) - 1) // 2
    if total == 0 or tied_x == total or tied_y == total:
        return None
    return (concordant - discordant) / math.sqrt((total - tied_x) * (total - tied_y))


def test_the_same_order_is_one_and_the_reversed_order_minus_one() -> None:
    order = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert kendall_tau(order, order) == 1.0
    assert kendall_tau(order, order[::-1]) == -1.0


def test_one_swap_in_four_leaves_five_of_six_pairs_concordant() -> None:
    # Pairs: 6; the swapped (3, 4) is the only discordant one: (5 - 1) / 6.
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)


def test_ties_count_as_neither_and_leave_the_denominator() -> None:
    # (1,2) tied in y; (1,3) and (2,3) concordant: 2 / sqrt(3 * 2).
    assert kendall_tau([1, 2, 3], [1, 1, 2]) == pytest.approx(2 / math.sqrt(6))
    # A tie on both sides is in neither denominator's count of untied pairs.
    assert kendall_tau([1, 1, 2], [5, 5, 6]) == pytest.approx(1.0)


def test_tau_is_undefined_for_one_item_or_a_constant_side() -> None:
    assert kendall_tau([], []) is None
    assert kendall_tau([1.0], [2.0]) is None
    assert kendall_tau([1, 1, 1], [1, 2, 3]) is None
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1])


def test_the_merge_sort_count_agrees_with_every_pair_compared() -> None:
    rng = random.Random(18)
    for n in (2, 3, 17, 64, 257):
        # Few distinct values: many ties on both sides.
        xs = [float(rng.randrange(n // 2 + 1)) for _ in range(n)]
        ys = [float(rng.randrange(n // 3 + 1)) for _ in range(n)]
        expected = brute_tau_b(xs, ys)
        got = kendall_tau(xs, ys)
        if expected is None:
            assert got is None
        else:
            assert got == pytest.approx(expected), n


def test_a_nearly_ordered_crowd_is_near_one() -> None:
    # 30,000 in position order, each admitted within a second of its slot at
    # 150 a second: a little local disorder, a tau close to 1.
    rng = random.Random(7)
    positions = list(range(30_000))
    admitted = [p / 150 + rng.random() for p in positions]
    tau = kendall_tau(positions, admitted)
    assert tau is not None and 0.99 < tau < 1.0


def test_no_one_admitted_after_someone_behind_them_is_not_late() -> None:
    result = late_admissions([1, 2, 3], [0.0, 1.0, 2.0])
    assert (result.late, result.worst_seconds, result.worst_position) == (0, 0.0, None)


def test_exactly_the_allowance_is_not_late_and_a_millisecond_more_is() -> None:
    on_the_mark = late_admissions([1, 2], [3.0, 1.0])
    assert on_the_mark.late == 0
    assert on_the_mark.worst_seconds == pytest.approx(2.0)
    assert on_the_mark.worst_position == 1
    over = late_admissions([1, 2], [3.001, 1.0])
    assert over.late == 1 and over.worst_position == 1


def test_lateness_is_measured_against_the_earliest_of_everyone_behind() -> None:
    # Position 1 at 10 s; position 2 went at 5 s, position 3 at 9 s: 5 s late.
    # Position 2 is behind no one who went earlier.
    result = late_admissions([1, 2, 3], [10.0, 5.0, 9.0])
    assert result.late == 1
    assert result.worst_seconds == pytest.approx(5.0)
    assert result.worst_position == 1
    # The allowance is a parameter.
    assert late_admissions([1, 2, 3], [10.0, 5.0, 9.0], allowance=6.0).late == 0


def test_people_at_one_position_are_not_behind_each_other() -> None:
    assert late_admissions([1, 1], [5.0, 0.0]).late == 0
    assert late_admissions([1, 1, 2], [5.0, 0.0, 1.0]).late == 1  # 4 s after position 2


def test_each_registrant_admitted_once_none_lost_no_id_shared() -> None:
    judged = exactly_once({
        "a": ["r1"],
        "b": ["r2", "r2"],      # a 202, then ticket_used in another tab: one admission
        "c": [],                 # never admitted: lost
        "d": ["r3", "r4"],       # two registrations: admitted twice
        "e": ["r1"],             # someone else's id
    })
    assert judged == ExactlyOnce(registrants=5, admitted_once=3, admitted_more=1, lost=1,
                                 shared_ids=1)
    assert not judged.ok
    assert exactly_once({"a": ["r1"], "b": ["r2"]}).ok


def test_the_eta_error_is_relative_to_the_actual_wait_floored_at_a_second() -> None:
    assert eta_error(100.0, 80.0) == pytest.approx(0.2)
    assert eta_error(50.0, 60.0) == pytest.approx(0.2)
    assert eta_error(0.5, 0.0) == pytest.approx(0.5)


def test_percentiles_by_nearest_rank_with_the_maximum() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentiles(values) == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None, "max": None}
