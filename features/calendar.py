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
    flags = np.zeros(days.shape, dtype=bool)
    if days.size == 0:
        return flags
    first, last = (int(y) + 1970 for y in np.array([days.min(), days.max()]).astype("datetime64[Y]").astype(np.int64))
    for year in range(first, last + 1):
        start, end = _peak_days(year=year)
        flags |= (days >= start) & (days <= end)
    return flags


@cache
def _peak_days(*, year: int) -> tuple[np.datetime64, np.datetime64]:
    """A year's peak window as numpy days (asked for on every live request, computed once)."""
    start, end = peak_window(year=year)
    return np.datetime64(start, "D"), np.datetime64(end, "D")
