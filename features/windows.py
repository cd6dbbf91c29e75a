"""Window counts of keyed stream entries, compiled: every aggregate of a live lookup in one native call.

The online state keeps each (stream, key set)'s entries as sorted composite keys (key code x 2^34
+ epoch seconds) with running sums, plus a short sorted tail of recent arrivals (see
`features.online`). A live request asks every aggregate about each of its rows; done as array
operations that is a few hundred small numpy calls, each paying interpreter overhead many times
what its arithmetic costs. Here it is one loop in native code (numba), which also answers rows that
ask the same key at the same time once. The arithmetic is the same as the array version's, in the
same order, so the counts and sums are identical.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from features.definitions import DAY, KEY_SHIFT

_SHIFT = int(KEY_SHIFT)
_MIX = 0x2545F4914F6CDD1D  # an odd 63-bit multiplier that spreads key codes over the hash table


@njit(cache=True, nogil=True)
def _lower_bound(values: np.ndarray, x: int, lo: int) -> int:
    """The first position at or after `lo` whose value is not below x (values sorted)."""
    hi = len(values)
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _first_asking(codes: np.ndarray, t: np.ndarray) -> np.ndarray:
    """For each key set and row, the first row asking the same key code at the same time."""
    keysets, n = codes.shape
    size = 2
    while size < 2 * n:
        size <<= 1
    table = np.empty(size, dtype=np.int64)
    first = np.empty((keysets, n), dtype=np.int64)
    for k in range(keysets):
        table[:] = -1
        for i in range(n):
            slot = ((codes[k, i] * _MIX) ^ t[i]) & (size - 1)
            while True:
                j = table[slot]
                if j < 0:
                    table[slot] = i
                    first[k, i] = i
                    break
                if codes[k, j] == codes[k, i] and t[j] == t[i]:
                    first[k, i] = j
                    break
                slot = (slot + 1) & (size - 1)
    return first


@njit(cache=True, nogil=True)
def count_windows(
    codes: np.ndarray,
    t: np.ndarray,
    composite: tuple,
    cumulative: tuple,
    tail: tuple,
    tail_running: tuple,
    plan_group: np.ndarray,
    plan_keyset: np.ndarray,
    plan_terms: np.ndarray,
    counts: np.ndarray,
    totals: np.ndarray,
) -> None:
    """Count and sum, for every aggregate a and row i, the entries of a's group under the row's key code
    (codes[key set of a, i]; -1 for a key never seen) whose time falls in a's window before t[i].

    Group g's entries are composite[g] (sorted) with running sums cumulative[g], and tail[g] with
    tail_running[g]. A window is four terms (see `window_terms`): each bound is t or t's midnight,
    plus an offset. Results go to counts[a, i] and totals[a, i].
    """
    first = _first_asking(codes, t)
    for a in range(len(plan_group)):
        g, k = plan_group[a], plan_keyset[a]
        sorted_part, running = composite[g], cumulative[g]
        recent, recent_running = tail[g], tail_running[g]
        for i in range(len(t)):
            f = first[k, i]
            if f != i:
                counts[a, i] = counts[a, f]
                totals[a, i] = totals[a, f]
                continue
            # A key never seen (code -1) has bounds below every entry: it counts nothing.
            base = codes[k, i] * _SHIFT
            midnight = t[i] - t[i] % DAY
            lo = base + (midnight if plan_terms[0, a] == 1 else t[i]) + plan_terms[1, a]
            hi = base + (midnight if plan_terms[2, a] == 1 else t[i]) + plan_terms[3, a]
            # Every window has lo <= hi, so the upper search starts where the lower one ended.
            start = _lower_bound(sorted_part, lo, 0)
            end = _lower_bound(sorted_part, hi, start)
            count = end - start
            total = running[end] - running[start]
            if len(recent):
                start = _lower_bound(recent, lo, 0)
                end = _lower_bound(recent, hi, start)
                count += end - start
                total += recent_running[end] - recent_running[start]
            counts[a, i] = count
            totals[a, i] = total
