"""The online feature state: updated event by event, answering features for a decision at time t.

It derives the same stream entries as the offline builder (`features.labels` explains when an
outcome becomes known), using timers for the outcomes that become known by a deadline passing
(a ship-by or a promised day ending without the expected event). The features themselves come
from the shared definitions, so offline and online agree for the same t.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.definitions import (
    AGGREGATES,
    DAY,
    KEY_SHIFT,
    Notices,
    active_disruptions,
    derive_features,
    static_features,
    window_bounds,
)
from features.errors import FeaturesError
from features.history import History
from features.schema import PICK_FAILURE_CODES

CARRIER_EXCEPTIONS = ("lost", "damaged", "address_problem")
# The aggregates answered together: those counting the same stream under the same key set.
_BY_ENTRIES: dict[tuple[str, tuple[str, ...]], list] = {}
for _aggregate in AGGREGATES:
    _BY_ENTRIES.setdefault((_aggregate.stream, _aggregate.keys), []).append(_aggregate)
_ALL_KEYSETS = {aggregate.keys for aggregate in AGGREGATES} | {("node_id",)}
_WINDOWS = list(dict.fromkeys(aggregate.window for aggregate in AGGREGATES))
_WINDOW_ROWS = {group: [_WINDOWS.index(a.window) for a in members] for group, members in _BY_ENTRIES.items()}


class _KeyedEntries:
    """One stream's entries grouped by one key set, for window counts over many keys at once.

    Entries live in a sorted columnar part (composite key*2^34+time, running sums) plus a short
    unsorted tail of recent arrivals, merged in when it grows: a query is a few vectorised
    searches, whatever the number of keys it asks about.
    """

    MERGE_AT = 4_096  # a merge rewrites the sorted part; the tail is sorted per query, cheaply

    def __init__(self) -> None:
        self.codes: dict[tuple, int] = {}
        self.composite = np.empty(0, dtype=np.int64)
        self.values = np.empty(0, dtype=np.float64)
        self.cumulative = np.zeros(1, dtype=np.float64)
        self.tail_composite: list[int] = []
        self.tail_values: list[float] = []

    @classmethod
    def from_arrays(cls, *, keys: list[tuple], codes: np.ndarray, time: np.ndarray, value: np.ndarray) -> _KeyedEntries:
        """Entries in bulk: `codes` index into `keys`."""
        index = cls()
        index.codes = {key: i for i, key in enumerate(keys)}
        composite = codes.astype(np.int64) * KEY_SHIFT + time.astype(np.int64)
        order = np.argsort(composite, kind="stable")
        index.composite = composite[order]
        index.values = value.astype(np.float64)[order]
        index.cumulative = np.concatenate([[0.0], np.cumsum(index.values)])
        return index

    def add(self, *, key: tuple, time: int, value: float) -> None:
        """Record one entry."""
        code = self.codes.setdefault(key, len(self.codes))
        self.tail_composite.append(code * int(KEY_SHIFT) + time)
        self.tail_values.append(value)
        if len(self.tail_composite) >= self.MERGE_AT:
            self._merge()

    def _merge(self) -> None:
        tail = np.array(self.tail_composite, dtype=np.int64)
        order = np.argsort(tail, kind="stable")
        # After existing entries of the same instant, as a replay would have them.
        positions = np.searchsorted(self.composite, tail[order], side="right")
        self.composite = np.insert(self.composite, positions, tail[order])
        self.values = np.insert(self.values, positions, np.array(self.tail_values, dtype=np.float64)[order])
        self.cumulative = np.concatenate([[0.0], np.cumsum(self.values)])
        self.tail_composite, self.tail_values = [], []

    def windows(self, *, keys: list[tuple], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Count and sum of entries with lo <= time < hi; keys has one key per column of lo and hi."""
        base = np.fromiter((self.codes.get(k, -1) for k in keys), dtype=np.int64, count=len(keys)) * KEY_SHIFT
        # Unknown keys (code -1) search below every entry and count nothing.
        lo, hi = base + lo, base + hi
        i_hi = np.searchsorted(self.composite, hi, side="left")
        i_lo = np.minimum(np.searchsorted(self.composite, lo, side="left"), i_hi)
        counts = i_hi - i_lo
        totals = self.cumulative[i_hi] - self.cumulative[i_lo]
        if self.tail_composite:
            tail = np.array(self.tail_composite, dtype=np.int64)
            order = np.argsort(tail, kind="stable")
            tail = tail[order]
            running = np.concatenate([[0.0], np.cumsum(np.array(self.tail_values, dtype=np.float64)[order])])
            t_hi = np.searchsorted(tail, hi, side="left")
            t_lo = np.minimum(np.searchsorted(tail, lo, side="left"), t_hi)
            counts = counts + (t_hi - t_lo)
            totals = totals + running[t_hi] - running[t_lo]
        return counts, totals


@dataclass
class _Pending:
    """What the state remembers of a shipment until its outcomes are known."""

    attrs: dict[str, object]
    ship_by: int | None
    promised_end: int
    handover_done: bool = False
    delivery_done: bool = False
    handed_at: int | None = None
    cancelled: bool = False
    carrier_exception_seen: bool = False


def _heap_below(heap: list[tuple], before: int):
    """Heap items with time < before, visiting only those (children are never earlier than parents)."""
    stack = [0]
    while stack:
        i = stack.pop()
        if i < len(heap) and heap[i][0] < before:
            yield heap[i]
            stack.extend((2 * i + 1, 2 * i + 2))


def _number(value: object) -> float:
    """A numeric field of an event, NaN when absent."""
    try:
        return float(value) if value is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


def _seconds(value: object) -> int | None:
    """A timestamp-like value as epoch seconds, None when missing."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value):
        return None
    return int(np.datetime64(pd.Timestamp(value).to_datetime64(), "s").astype(np.int64))


class OnlineFeatureState:
    """Feature state kept up to date by events, answering point-in-time features."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, tuple[str, ...]], _KeyedEntries] = {}
        self._pending: dict[str, _Pending] = {}
        self._timers: list[tuple[int, int, str, str]] = []
        self._timer_seq = 0
        self._clock: int | None = None
        self._node_days: dict[tuple[str, int], tuple[float, float]] = {}
        self._notices: list[dict] = []
        self._notices_cache: tuple[int, Notices | None] | None = None
        self._keysets = {}
        for aggregate in AGGREGATES:
            self._keysets.setdefault(aggregate.stream, set()).add(aggregate.keys)

    @property
    def last_event_at(self) -> pd.Timestamp | None:
        """When the newest applied event happened (None before the first)."""
        return None if self._clock is None else pd.Timestamp(self._clock, unit="s")

    # ----- events ---------------------------------------------------------------------------
    def ingest(self, event: Mapping[str, object], *, allow_late: bool = False) -> None:
        """Apply one event; events must come in time order unless `allow_late`.

        A late event (older than the newest applied) is entered at its own time, but cannot undo
        an outcome its deadline already settled: live, that deadline passed with nothing heard.
        """
        time = _seconds(event.get("event_time"))
        if time is None:
            raise FeaturesError(f"event {event.get('event_id')!r} has no event_time")
        late = self._clock is not None and time < self._clock
        if late and not allow_late:
            raise FeaturesError(
                f"event {event.get('event_id')!r} at {pd.Timestamp(time, unit='s')} arrived after "
                f"{pd.Timestamp(self._clock, unit='s')}; events must be applied in time order"
            )
        if not late:
            self._fire_timers(before=time)
            self._clock = time
        kind = event.get("event_type")
        handler = {
            "allocated": self._allocated,
            "handed_over": self._handed_over,
            "delivered": self._delivered,
            "exception": self._exception,
            "node_capacity": self._node_capacity,
            "disruption_notice": self._notice,
        }.get(kind)
        if handler is None:
            raise FeaturesError(f"event {event.get('event_id')!r} has unknown event_type {kind!r}")
        handler(event, time)

    def ingest_frame(self, events: pd.DataFrame) -> None:
        """Apply every event of a frame, in its order."""
        for event in events.to_dict("records"):
            self.ingest(event)

    def _allocated(self, event: Mapping[str, object], time: int) -> None:
        attrs = {
            k: event.get(k) for k in ("node_id", "node_type", "carrier", "service", "origin_region", "dest_region")
        }
        ship_by = _seconds(event.get("ship_by"))
        promised = pd.Timestamp(event["promised_delivery"]).normalize() + pd.Timedelta(days=1)
        pending = _Pending(attrs=attrs, ship_by=ship_by, promised_end=_seconds(promised))
        self._pending[str(event["shipment_id"])] = pending
        self._add("allocation", time=time, value=1.0, attrs=attrs)
        if ship_by is not None:
            self._arm(time=ship_by + 1, shipment_id=str(event["shipment_id"]), kind="handover")

    def _handed_over(self, event: Mapping[str, object], time: int) -> None:
        shipment_id = str(event["shipment_id"])
        pending = self._pending.get(shipment_id)
        if pending is None:
            return
        pending.handed_at = time
        self._add("handed", time=time, value=1.0, attrs=pending.attrs)
        if pending.ship_by is not None and not pending.handover_done:
            pending.handover_done = True
            late = time > pending.ship_by
            self._add("handover", time=pending.ship_by + 1 if late else time, value=float(late), attrs=pending.attrs)
        self._arm(time=max(time, pending.promised_end), shipment_id=shipment_id, kind="delivery")

    def _delivered(self, event: Mapping[str, object], time: int) -> None:
        pending = self._pending.get(str(event["shipment_id"]))
        if pending is None or pending.handed_at is None or pending.delivery_done:
            return
        pending.delivery_done = True
        late = time >= pending.promised_end
        known = max(pending.handed_at, pending.promised_end) if late else time
        self._add("delivery", time=known, value=float(late), attrs=pending.attrs)
        if not late:
            transit_days = float(time // DAY - pending.handed_at // DAY)
            self._add("transit", time=time, value=transit_days, attrs=pending.attrs)

    def _exception(self, event: Mapping[str, object], time: int) -> None:
        pending = self._pending.get(str(event["shipment_id"]))
        code = event.get("exception_code")
        if pending is None:
            return
        if code in CARRIER_EXCEPTIONS and not pending.carrier_exception_seen:
            pending.carrier_exception_seen = True
            self._add("carrier_exception", time=time, value=1.0, attrs=pending.attrs)
        if code in PICK_FAILURE_CODES and pending.handed_at is None:
            pending.cancelled = True

    def _node_capacity(self, event: Mapping[str, object], time: int) -> None:
        if time % DAY:
            raise FeaturesError(f"node_capacity event {event.get('event_id')!r} must be stamped at midnight")
        self._node_days[(str(event["node_id"]), time)] = (
            float(event.get("capacity", np.nan)),
            float(event.get("backlog_start", np.nan)),
        )

    def _notice(self, event: Mapping[str, object], time: int) -> None:
        self._notices.append(
            {
                "announced_at": pd.Timestamp(time, unit="s"),
                "start": pd.Timestamp(event["start"]),
                "end": pd.Timestamp(event["end"]),
                "region": event["region"],
                "carrier": event.get("carrier"),
                "severity": event["severity"],
            }
        )

    # ----- timers ---------------------------------------------------------------------------
    def _arm(self, *, time: int, shipment_id: str, kind: str) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (time, self._timer_seq, shipment_id, kind))

    def _fire_timers(self, *, before: int) -> None:
        """Deadlines that passed without the expected event become late outcomes."""
        while self._timers and self._timers[0][0] < before:
            time, _, shipment_id, kind = heapq.heappop(self._timers)
            pending = self._pending.get(shipment_id)
            if pending is None:
                continue
            if kind == "handover" and not pending.handover_done and not pending.cancelled:
                pending.handover_done = True
                self._add("handover", time=time, value=1.0, attrs=pending.attrs)
            elif kind == "delivery" and not pending.delivery_done:
                pending.delivery_done = True
                self._add("delivery", time=time, value=1.0, attrs=pending.attrs)

    def _entry_keys(self, stream: str, attrs: Mapping[str, object]) -> list[tuple[tuple[str, ...], tuple]]:
        """(key set, key) of every grouping an entry of this stream with these attributes belongs to."""
        keys = []
        for keyset in self._keysets.get(stream, ()):
            key = tuple(attrs.get(k) for k in keyset)
            if not any(v is None or (isinstance(v, float) and np.isnan(v)) for v in key):
                keys.append((keyset, key))
        return keys

    def _add(self, stream: str, *, time: int, value: float, attrs: Mapping[str, object]) -> None:
        for keyset, key in self._entry_keys(stream, attrs):
            entries = self._entries.get((stream, keyset))
            if entries is None:
                entries = self._entries[(stream, keyset)] = _KeyedEntries()
            entries.add(key=key, time=time, value=value)

    def _due(self, *, before: int) -> dict[tuple, dict[tuple, list[int]]]:
        """Late outcomes whose deadline passes before `before` but beyond the last event: counted, not stored.

        A query may look ahead of the events received so far; firing those timers for real would
        record a late outcome that an event still on its way could contradict.
        Returns (stream, key set) -> key -> deadlines.
        """
        due: dict[tuple, dict[tuple, list[int]]] = {}
        for time, _, shipment_id, kind in _heap_below(self._timers, before):
            pending = self._pending.get(shipment_id)
            if pending is None:
                continue
            if kind == "handover" and not pending.handover_done and not pending.cancelled:
                stream = "handover"
            elif kind == "delivery" and not pending.delivery_done:
                stream = "delivery"
            else:
                continue
            for keyset, key in self._entry_keys(stream, pending.attrs):
                due.setdefault((stream, keyset), {}).setdefault(key, []).append(time)
        return due

    # ----- queries --------------------------------------------------------------------------
    def features(self, *, rows: Mapping[str, np.ndarray] | pd.DataFrame) -> dict[str, np.ndarray]:
        """Every feature for each decision row, from what the state knows strictly before the row's time.

        `rows` is a frame or plain column arrays. Every aggregate over the same stream and key set
        is answered by one vectorised search.
        """
        t = np.asarray(rows["allocated_at"], dtype="datetime64[s]").astype(np.int64)
        if len(t) and self._clock is not None:
            # Deadlines up to the last event are settled; later ones are counted per query, not stored.
            self._fire_timers(before=self._clock)
        due = self._due(before=int(t.max())) if len(t) else {}
        static = static_features(rows=rows)
        row_keys = {
            keyset: list(zip(*(static[k] for k in keyset))) if keyset else [()] * len(t) for keyset in _ALL_KEYSETS
        }
        # Each distinct window's bounds once; a group of aggregates takes its rows by index.
        bounds = [window_bounds(window=w, t=t) for w in _WINDOWS]
        all_lo, all_hi = np.stack([b[0] for b in bounds]), np.stack([b[1] for b in bounds])
        aggregates: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for (stream, keyset), members in _BY_ENTRIES.items():
            keys = row_keys[keyset]
            lo, hi = all_lo[_WINDOW_ROWS[(stream, keyset)]], all_hi[_WINDOW_ROWS[(stream, keyset)]]
            entries = self._entries.get((stream, keyset))
            if entries is None:
                counts, totals = np.zeros(lo.shape, dtype=np.int64), np.zeros(lo.shape)
            else:
                counts, totals = entries.windows(keys=keys, lo=lo, hi=hi)
            late = due.get((stream, keyset))
            if late:
                # Late outcomes not yet settled count as 1 each inside the window.
                extra = _count_due(deadlines=late, keys=keys, lo=lo, hi=hi)
                counts, totals = counts + extra, totals + extra
            for m, aggregate in enumerate(members):
                aggregates[aggregate.name] = (counts[m], totals[m])
        return derive_features(
            static=static,
            aggregates=aggregates,
            node_state=self._node_state(node_id=static["node_id"], t=t),
            disruptions=active_disruptions(
                notices=self._notice_arrays(), t=t, carrier=static["carrier"], dest_region=static["dest_region"]
            ),
        )

    def _node_state(self, *, node_id: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """Each row's node capacity and opening backlog for its day, when known before its time."""
        capacity = np.full(len(t), np.nan)
        backlog = np.full(len(t), np.nan)
        for i, (node, when) in enumerate(zip(node_id, t.tolist())):
            midnight = when - when % DAY
            known = self._node_days.get((str(node), midnight))
            if known is not None and when > midnight:
                capacity[i], backlog[i] = known
        return {"capacity": capacity, "backlog_start": backlog}

    def _notice_arrays(self) -> Notices | None:
        """The notices received so far, as arrays (rebuilt only after a new notice)."""
        if self._notices_cache is None or self._notices_cache[0] != len(self._notices):
            self._notices_cache = (len(self._notices), Notices.from_records(self._notices))
        return self._notices_cache[1]


def _count_due(*, deadlines: dict[tuple, list[int]], keys: list[tuple], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """How many unsettled deadlines of each column's key fall in each window."""
    extra = np.zeros(lo.shape, dtype=np.int64)
    for i, key in enumerate(keys):
        for when in deadlines.get(key, ()):
            extra[:, i] += (lo[:, i] <= when) & (when < hi[:, i])
    return extra


def warm_start(*, history: History, as_of: pd.Timestamp) -> OnlineFeatureState:
    """The state an event replay up to `as_of` would reach, built in bulk from a history (seconds, not hours).

    Only facts known strictly before `as_of` enter; shipments with outcomes still open at `as_of`
    are remembered with their deadlines, so the events that follow continue exactly where a
    replay would have been.
    """
    from features.offline import build_streams  # the offline builder owns stream extraction

    state = OnlineFeatureState()
    cutoff = int(np.datetime64(pd.Timestamp(as_of).to_datetime64(), "s").astype(np.int64))
    shipments = history.shipments[history.shipments["allocated_at"] < as_of].reset_index(drop=True)
    streams = build_streams(shipments=shipments, as_of=np.datetime64(cutoff - 1, "s"))
    latest = []
    for stream, entries in streams.items():
        known = entries.time < cutoff
        if known.any():
            latest.append(int(entries.time[known].max()))
        for keyset in state._keysets.get(stream, ()):
            usable = known.copy()
            for key in keyset:
                usable &= pd.notna(entries.attrs[key])
            columns = [entries.attrs[key][usable] for key in keyset]
            if columns:
                codes, uniques = pd.MultiIndex.from_arrays(columns).factorize()
                keys = [tuple(u) for u in uniques]
            else:
                codes, keys = np.zeros(int(usable.sum()), dtype=np.int64), [()]
            state._entries[(stream, keyset)] = _KeyedEntries.from_arrays(
                keys=keys, codes=codes, time=entries.time[usable], value=entries.value[usable]
            )
    _remember_open_shipments(state=state, shipments=shipments, cutoff=cutoff)
    if history.node_days is not None:
        days = history.node_days[history.node_days["date"] < as_of]
        for row in days.itertuples(index=False):
            midnight = int(np.datetime64(pd.Timestamp(row.date).to_datetime64(), "s").astype(np.int64))
            state._node_days[(str(row.node_id), midnight)] = (_number(row.capacity), _number(row.backlog_start))
    if history.notices is not None:
        for row in history.notices[history.notices["announced_at"] < as_of].to_dict("records"):
            state._notices.append(
                {k: row.get(k) for k in ("announced_at", "start", "end", "region", "carrier", "severity")}
            )
    state._clock = max(latest) if latest else None
    return state


def _remember_open_shipments(*, state: OnlineFeatureState, shipments: pd.DataFrame, cutoff: int) -> None:
    """Pending records and deadline timers for shipments whose outcomes are still open at the cutoff."""
    from features.labels import carrier_exception, pick_failed, promised_end

    def seconds(column: str) -> np.ndarray:
        return shipments[column].to_numpy(dtype="datetime64[s]").astype(np.int64)

    nat = np.iinfo(np.int64).min
    ship_by, handed, delivered = seconds("ship_by"), seconds("handed_over_at"), seconds("delivered_at")
    exception_at = seconds("exception_at")
    deadline = promised_end(shipments=shipments).astype(np.int64)
    failed, carrier_flag = pick_failed(shipments=shipments), carrier_exception(shipments=shipments)
    ids = shipments["shipment_id"].to_numpy(dtype=object)
    attrs = {
        k: shipments[k].to_numpy(dtype=object)
        for k in ("node_id", "node_type", "carrier", "service", "origin_region", "dest_region")
    }
    timers = []
    for i in range(len(shipments)):
        has_ship_by = ship_by[i] != nat
        handed_before = handed[i] != nat and handed[i] < cutoff
        cancelled = (
            bool(failed[i])
            and exception_at[i] != nat
            and exception_at[i] < cutoff
            and (not has_ship_by or exception_at[i] <= ship_by[i] + 1)
        )
        handover_done = (not has_ship_by) or handed_before or cancelled or ship_by[i] + 1 < cutoff
        delivered_before = delivered[i] != nat and delivered[i] < cutoff
        late_deadline = max(int(handed[i]), int(deadline[i])) if handed_before else None
        delivery_done = delivered_before or (late_deadline is not None and late_deadline < cutoff)
        if handover_done and (delivery_done or cancelled):
            continue
        pending = _Pending(
            attrs={k: v[i] for k, v in attrs.items()},
            ship_by=int(ship_by[i]) if has_ship_by else None,
            promised_end=int(deadline[i]),
            handover_done=handover_done,
            delivery_done=delivery_done,
            handed_at=int(handed[i]) if handed_before else None,
            cancelled=cancelled,
            carrier_exception_seen=bool(carrier_flag[i]) and exception_at[i] != nat and exception_at[i] < cutoff,
        )
        state._pending[str(ids[i])] = pending
        if not handover_done:
            timers.append((int(ship_by[i]) + 1, "handover", str(ids[i])))
        if late_deadline is not None and not delivery_done:
            timers.append((late_deadline, "delivery", str(ids[i])))
    for time, kind, shipment_id in sorted(timers):
        state._arm(time=time, shipment_id=shipment_id, kind=kind)
