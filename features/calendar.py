"""The retail calendar: peak periods are known in advance, so a peak flag is a point-in-time-safe feature."""

from __future__ import annotations

from datetime import date, timedelta
from functools import cache

import numpy as np


def thanksgiving(*, year: int) -> date:
    """The fourth Thursday of November."""
    first = date(year, 11, 1)
    first_thursday = first + timedelta(days=(3 - first.weekday()) % 7)
    return first_thursday + timedelta(weeks=3)


def peak_window(*, year: int) -> tuple[date, date]:
    """Black Friday week: the Monday before Thanksgiving through Cyber Monday (inclusive)."""
    day = thanksgiving(year=year)
    return day - timedelta(days=3), day + timedelta(days=4)


def is_peak(*, days: np.ndarray) -> np.ndarray:
    """Whether each date (numpy datetime64[D]) falls in a peak window."""
    days = np.asarray(days, dtype="datetime64[D]")
    if days.size == 0:
        return np.zeros(days.shape, dtype=bool)
    index = days.astype(np.int64)
    table = _peak_table()
    # Days 1970-2199 read a table (a live request asks on every call); other days are worked out.
    if index.min() >= 0 and index.max() < len(table):
        return table[index]
    return _is_peak_by_year(days=days)


def _is_peak_by_year(*, days: np.ndarray) -> np.ndarray:
    """`is_peak`, year by year."""
    flags = np.zeros(days.shape, dtype=bool)
    known = days[~np.isnat(days)]
    if known.size == 0:
        return flags
    first, last = (int(y) + 1970 for y in np.array([known.min(), known.max()]).astype("datetime64[Y]").astype(np.int64))
    for year in range(first, last + 1):
        start, end = _peak_days(year=year)
        flags |= (days >= start) & (days <= end)
    return flags


@cache
def _peak_days(*, year: int) -> tuple[np.datetime64, np.datetime64]:
    """A year's peak window as numpy days."""
    start, end = peak_window(year=year)
    return np.datetime64(start, "D"), np.datetime64(end, "D")


@cache
def _peak_table() -> np.ndarray:
    """Whether each day from 1970-01-01 to 2199-12-31 (by its number since the epoch) is a peak day."""
    days = np.arange(np.datetime64("1970-01-01"), np.datetime64("2200-01-01"), dtype="datetime64[D]")
    return _is_peak_by_year(days=days)
