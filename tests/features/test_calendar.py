"""The retail calendar: peak weeks, the same whether read from the table or worked out year by year."""

from __future__ import annotations

import numpy as np

from features.calendar import _is_peak_by_year, is_peak, peak_window


def test_black_friday_week_runs_from_the_monday_before_thanksgiving_to_cyber_monday():
    assert peak_window(year=2026) == (np.datetime64("2026-11-23").item(), np.datetime64("2026-11-30").item())
    days = np.array(["2026-11-22", "2026-11-23", "2026-11-30", "2026-12-01", "NaT"], dtype="datetime64[D]")
    assert is_peak(days=days).tolist() == [False, True, True, False, False]


def test_the_table_agrees_with_the_calendar_on_every_day_it_holds_and_days_beyond_it_are_worked_out():
    days = np.arange(np.datetime64("1960-01-01"), np.datetime64("2210-01-01"), dtype="datetime64[D]")
    in_table = days[(days >= np.datetime64("1970-01-01")) & (days < np.datetime64("2200-01-01"))]
    assert np.array_equal(is_peak(days=in_table), _is_peak_by_year(days=in_table))
    beyond = np.array([peak_window(year=2205)[0], peak_window(year=1965)[1]], dtype="datetime64[D]")
    assert is_peak(days=beyond).tolist() == [True, True]
    assert is_peak(days=in_table).sum() == 230 * 8  # eight days in each of 230 years
