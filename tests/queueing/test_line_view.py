"""A door's copy of the line and what it answers without Redis (queueing/line.py)."""

from __future__ import annotations

from queueing.line_view import LineView, OrderWatch


def view(served: int, gone: list[int], turns: list[tuple[int, int]] | None = None) -> LineView:
    line = LineView(served=served, tail=100, gone=sorted(gone), fresh=True)
    line.turns = turns or []
    return line


def test_people_ahead_count_only_live_tickets_past_the_served_counter() -> None:
    line = view(10, [12, 15, 40])
    assert line.ahead(11) == 0
    assert line.ahead(13) == 1  # 11; 12 is gone
    assert line.ahead(20) == 7  # 11..19 less 12 and 15
    assert line.ahead(10) == 0 and line.ahead(3) == 0
    assert line.is_gone(15) and not line.is_gone(16)


def test_a_tick_folds_in_the_gone_positions_and_forgets_those_served() -> None:
    line = view(10, [12, 15])
    reply = ["open", 14, 100, 0, 0, 0, "", 3, [b"30"], [b"14:1700000000000"], 80, 0, 1, 2, 0]
    line.apply(reply)
    assert line.served == 14 and line.gone == [15, 30] and line.gone_cursor == 3
    assert line.turn_reached_ms(13) == 1_700_000_000_000
    assert line.turn_reached_ms(15) is None


def test_the_measured_rate_comes_from_the_served_counter_once_there_is_history() -> None:
    line = view(0, [])
    assert line.measured_rate(7.0) == 7.0
    line.samples.extend([(100.0, 0), (102.0, 10), (110.0, 50)])
    assert line.measured_rate(7.0) == 5.0
    # Only the last 30 s count.
    line.samples.append((135.0, 100))
    assert line.measured_rate(7.0) == 50 / 25


def test_skipped_positions_do_not_count_as_served_in_the_rate() -> None:
    line = view(10, [12, 15])
    reply = ["open", 20, 100, 0, 0, 0, "", 2, [], [], 80, 0, 0, 0, 0]
    line.apply(reply)
    assert line.skipped == 2 and line.samples[-1][1] == 18


def test_an_admission_after_someone_behind_was_admitted_is_late_beyond_the_slack() -> None:
    order = OrderWatch(slack=2.0)
    assert not order.admitted(5, now=0.0)
    assert not order.admitted(9, now=1.0)
    assert not order.admitted(7, now=2.5)   # 9 was admitted 1.5 s before: within the slack
    assert order.admitted(8, now=3.5)       # 9 was admitted 2.5 s before
    assert not order.admitted(10, now=4.0)
