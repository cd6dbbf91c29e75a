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
from itertools import chain, repeat

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
    window_terms,
)
from features.errors import FeaturesError
from features.history import History
from features.schema import PICK_FAILURE_CODES

CARRIER_EXCEPTIONS = ("lost", "damaged", "address_problem")
_UNKNOWN_DAY = (np.nan, np.nan)  # a node day's capacity and opening backlog, before any figures arrive
# What a row's risk can lack any history of (its rates then are the network's): name -> the key set naming it.
HISTORY_OF = {"node": ("node_id",), "carrier": ("carrier",), "lane": ("carrier", "origin_region", "dest_region")}
# Every combination of those names, by bitmask (node 1, carrier 2, lane 4).
_UNKNOWN_BY_MASK = [tuple(name for bit, name in enumerate(HISTORY_OF) if mask >> bit & 1) for mask in range(8)]
_HISTORY_BITS = np.array([[1 << bit] for bit in range(len(HISTORY_OF))], dtype=np.int64)
# The aggregates answered together: those counting the same stream under the same key set.
_BY_ENTRIES: dict[tuple[str, tuple[str, ...]], list] = {}
for _aggregate in AGGREGATES:
    _BY_ENTRIES.setdefault((_aggregate.stream, _aggregate.keys), []).append(_aggregate)
_GROUPS = list(_BY_ENTRIES)
_KEYSETS = list(dict.fromkeys(keyset for _, keyset in _GROUPS))
_KEY_COLUMNS = sorted({column for keyset in _KEYSETS for column in keyset})
_HISTORY_KEYSETS = np.array([_KEYSETS.index(keyset) for keyset in HISTORY_OF.values()])
# Every aggregate in group order, with its window as bound terms (see `window_terms`).
_PLAN = [aggregate for group in _GROUPS for aggregate in _BY_ENTRIES[group]]
_PLAN_KEYSET = np.array([_KEYSETS.index(a.keys) for a in _PLAN])
_PLAN_TERMS = np.array([window_terms(window=a.window) for a in _PLAN], dtype=np.int64).T
# Each group's aggregates as a range of _PLAN.
_GROUP_SPANS = []
for _group in _GROUPS:
    _first = _PLAN.index(_BY_ENTRIES[_group][0])
    _GROUP_SPANS.append((_group, _first, _first + len(_BY_ENTRIES[_group])))


class _KeyedEntries:
    """One stream's entries grouped by one key set, for window counts over many keys at once.

    Entries live in a sorted columnar part (composite key*2^34+time, running sums) plus a short
    sorted tail of recent arrivals with its own running sums, merged in when it grows: a query is
    one vectorised search, whatever the number of keys and windows it asks about. Arrivals wait in
    an inbox until `settle` sorts them into the tail: the service settles after each batch of
    events it applies, so a query finds nothing to rebuild, and catching up on many events stays
    cheap. Key codes come from a dictionary the state shares among the streams grouped by the
    same key set, so a request looks each key up once.
    """

    MERGE_AT = 4_096  # a merge rewrites the sorted part; settling rewrites at most this many

    def __init__(self, *, codes: dict[tuple, int] | None = None) -> None:
        self.codes: dict[tuple, int] = {} if codes is None else codes
        self.composite = np.empty(0, dtype=np.int64)
        self.values = np.empty(0, dtype=np.float64)
        self.cumulative = np.zeros(1, dtype=np.float64)
        self.tail = np.empty(0, dtype=np.int64)
        self.tail_values = np.empty(0, dtype=np.float64)
        self.tail_running = np.zeros(1, dtype=np.float64)
        self.inbox: list[int] = []
        self.inbox_values: list[float] = []

    @classmethod
    def from_arrays(
        cls, *, codes: dict[tuple, int], keys: list[tuple], key_index: np.ndarray, time: np.ndarray, value: np.ndarray
    ) -> _KeyedEntries:
        """Entries in bulk: `key_index` indexes into `keys`, which are entered into the shared `codes`."""
        index = cls(codes=codes)
        shared = np.array([codes.setdefault(key, len(codes)) for key in keys], dtype=np.int64)
        composite = shared[key_index] * KEY_SHIFT + time.astype(np.int64) if len(keys) else np.empty(0, np.int64)
        order = np.argsort(composite, kind="stable")
        index.composite = composite[order]
        index.values = value.astype(np.float64)[order]
        index.cumulative = np.concatenate([[0.0], np.cumsum(index.values)])
        return index

    def add(self, *, key: tuple, time: int, value: float) -> None:
        """Record one entry (queries count it once it is settled)."""
        self.inbox.append(self.codes.setdefault(key, len(self.codes)) * int(KEY_SHIFT) + time)
        self.inbox_values.append(value)
        if len(self.inbox) >= self.MERGE_AT:
            self.settle()

    def settle(self) -> None:
        """Sort the arrivals waiting in the inbox into the tail, and the tail into the sorted part once it is long."""
        if not self.inbox:
            return
        arrived = np.array(self.inbox, dtype=np.int64)
        order = np.argsort(arrived, kind="stable")
        # After entries of the same key and instant already there, as a replay would have them.
        at = np.searchsorted(self.tail, arrived[order], side="right")
        self.tail = np.insert(self.tail, at, arrived[order])
        self.tail_values = np.insert(self.tail_values, at, np.array(self.inbox_values, dtype=np.float64)[order])
        self.tail_running = np.concatenate([[0.0], np.cumsum(self.tail_values)])
        self.inbox, self.inbox_values = [], []
        if len(self.tail) >= self.MERGE_AT:
            self._merge()

    def _merge(self) -> None:
        # After existing entries of the same instant, as a replay would have them.
        positions = np.searchsorted(self.composite, self.tail, side="right")
        self.composite = np.insert(self.composite, positions, self.tail)
        self.values = np.insert(self.values, positions, self.tail_values)
        self.cumulative = np.concatenate([[0.0], np.cumsum(self.values)])
        self.tail = np.empty(0, dtype=np.int64)
        self.tail_values = np.empty(0, dtype=np.float64)
        self.tail_running = np.zeros(1, dtype=np.float64)

    def windows(self, *, bounds: np.ndarray, counts: np.ndarray, totals: np.ndarray) -> None:
        """Count and sum of the settled entries in each column's [bounds[0], bounds[1]) of composite key*2^34+time
        (lo <= hi), written into `counts` and `totals`.

        A key never seen (code -1) has negative bounds, below every entry: it counts nothing.
        """
        # Every window has lo <= hi, so the lower search never lands past the upper one.
        found = np.searchsorted(self.composite, bounds, side="left")
        np.subtract(found[1], found[0], out=counts)
        summed = self.cumulative.take(found)
        np.subtract(summed[1], summed[0], out=totals)
        if len(self.tail):
            found = np.searchsorted(self.tail, bounds, side="left")
            counts += found[1] - found[0]
            summed = self.tail_running.take(found)
            totals += summed[1] - summed[0]


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
        # One key -> code dictionary per key set, shared by every stream grouped by it.
        self._codes: dict[tuple[str, ...], dict[tuple, int]] = {}
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

    @property
    def last_event_seconds(self) -> int | None:
        """`last_event_at` as epoch seconds (cheap enough to ask on every request)."""
        return self._clock

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
                codes = self._codes.setdefault(keyset, {})
                entries = self._entries[(stream, keyset)] = _KeyedEntries(codes=codes)
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

    def settle(self) -> None:
        """Sort the entries of the events applied since the last settle in with the rest (queries do it too)."""
        for entries in self._entries.values():
            entries.settle()

    # ----- queries --------------------------------------------------------------------------
    def features(self, *, rows: Mapping[str, np.ndarray] | pd.DataFrame) -> dict[str, np.ndarray]:
        """Every feature for each decision row, from what the state knows strictly before the row's time."""
        return self.lookup(rows=rows)[0]

    def lookup(
        self, *, rows: Mapping[str, np.ndarray] | pd.DataFrame
    ) -> tuple[dict[str, np.ndarray], list[tuple[str, ...]]]:
        """Every feature for each decision row (see `features`), and which of its node, carrier and lane the
        state has no history of at all (`HISTORY_OF`: the windowed rates about them are then the network's).

        `rows` is a frame or plain column arrays. Rows asking about the same key at the same time
        are answered once (a request's candidates share most keys), and every aggregate over the
        same stream and key set by one vectorised search.
        """
        self.settle()
        t = np.asarray(rows["allocated_at"], dtype="datetime64[s]").astype(np.int64)
        if len(t) and self._clock is not None:
            # Deadlines up to the last event are settled; later ones are counted per query, not stored.
            self._fire_timers(before=self._clock)
        due = self._due(before=int(t.max())) if len(t) else {}
        static = static_features(rows=rows)
        asked, inverse, codes, times = self._distinct_queries(static=static, t=t)
        # One search per aggregate and distinct query of its key set, laid out in _PLAN's order.
        sizes = np.array([len(keys) for keys in asked], dtype=np.int64)
        key_start = np.concatenate([[0], np.cumsum(sizes)])
        per_aggregate = sizes[_PLAN_KEYSET]
        start = np.concatenate([[0], np.cumsum(per_aggregate)])
        query = np.arange(start[-1]) + np.repeat(key_start[_PLAN_KEYSET] - start[:-1], per_aggregate)
        at = times[query]
        midnight = at - at % DAY
        terms = _PLAN_TERMS[:, np.repeat(np.arange(len(_PLAN)), per_aggregate)]
        base = codes[query] * KEY_SHIFT
        bounds = np.stack(
            [
                base + np.where(terms[0] == 1, midnight, at) + terms[1],
                base + np.where(terms[2] == 1, midnight, at) + terms[3],
            ]
        )
        counts, totals = np.zeros(len(query), dtype=np.int64), np.zeros(len(query))
        for group, first, end in _GROUP_SPANS:
            s, e = start[first], start[end]
            entries = self._entries.get(group)
            if entries is not None and e > s:
                entries.windows(bounds=bounds[:, s:e], counts=counts[s:e], totals=totals[s:e])
            late = due.get(group)
            if late and e > s:
                # Late outcomes not yet settled count as 1 each inside the window.
                k = _KEYSETS.index(group[1])
                keys = [asked[k][j] for j in (query[s:e] - key_start[k]).tolist()]
                lo, hi = bounds[:, s:e] - base[s:e]
                extra = _count_due(deadlines=late, keys=keys, lo=lo, hi=hi)
                counts[s:e] += extra
                totals[s:e] += extra
        # Back to rows: each aggregate reads, for every row, the distinct query the row maps to.
        gather = start[:-1, None] + inverse[_PLAN_KEYSET]
        row_counts, row_totals = counts[gather], totals[gather]
        aggregates = {a.name: (row_counts[i], row_totals[i]) for i, a in enumerate(_PLAN)}
        features = derive_features(
            static=static,
            aggregates=aggregates,
            node_state=self._node_state(node_id=static["node_id"], t=t),
            disruptions=active_disruptions(
                notices=self._notice_arrays(), t=t, carrier=static["carrier"], dest_region=static["dest_region"]
            ),
        )
        # A key the state has never seen has no code (-1): each row reads its own keys' codes.
        unseen = codes[key_start[_HISTORY_KEYSETS, None] + inverse[_HISTORY_KEYSETS]] < 0
        mask = (unseen * _HISTORY_BITS).sum(axis=0)
        return features, list(map(_UNKNOWN_BY_MASK.__getitem__, mask.tolist()))

    def _distinct_queries(
        self, *, static: dict[str, np.ndarray], t: np.ndarray
    ) -> tuple[list[list[tuple]], np.ndarray, np.ndarray, np.ndarray]:
        """Per key set, its distinct (key, time) queries' keys and each row's query; then every query's
        key code and time, key set after key set."""
        n = len(t)
        uniform = n == 0 or t.min() == t.max()  # the usual request: every candidate decided at one time
        columns = {column: static[column].tolist() for column in _KEY_COLUMNS}  # lists iterate faster than arrays
        asked, inverse, codes, times = [], [], [], []
        for keyset in _KEYSETS:
            keys = list(zip(*[columns[k] for k in keyset])) if keyset else [()] * n
            pairs = keys if uniform else list(zip(keys, t.tolist()))
            distinct: dict = {}  # pair -> its number, in order of appearance
            inverse.append([distinct.setdefault(pair, len(distinct)) for pair in pairs])
            asked.append(list(distinct) if uniform else [key for key, _ in distinct])
            if not uniform:
                times.extend(when for _, when in distinct)
            codes.extend(map(self._codes.get(keyset, {}).get, asked[-1], repeat(-1)))
        return (
            asked,
            np.array(inverse, dtype=np.int64).reshape(len(_KEYSETS), n),
            np.array(codes, dtype=np.int64),
            np.array(times, dtype=np.int64) if not uniform else np.repeat(t[:1], len(codes)),
        )

    def _node_state(self, *, node_id: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """Each row's node capacity and opening backlog for its day, when known before its time."""
        midnight = t - t % DAY
        known = map(self._node_days.get, zip(map(str, node_id), midnight.tolist()), repeat(_UNKNOWN_DAY))
        state = np.fromiter(chain.from_iterable(known), dtype=np.float64, count=2 * len(t)).reshape(-1, 2)
        # A day's figures are stamped at its midnight: a row at that very second does not know them yet.
        state[t == midnight] = np.nan
        return {"capacity": state[:, 0], "backlog_start": state[:, 1]}

    def _notice_arrays(self) -> Notices | None:
        """The notices received so far, as arrays (rebuilt only after a new notice)."""
        if self._notices_cache is None or self._notices_cache[0] != len(self._notices):
            self._notices_cache = (len(self._notices), Notices.from_records(self._notices))
        return self._notices_cache[1]


def _count_due(*, deadlines: dict[tuple, list[int]], keys: list[tuple], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """How many unsettled deadlines of each search's key fall in its window."""
    extra = np.zeros(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        for when in deadlines.get(key, ()):
            extra[i] += lo[i] <= when < hi[i]
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
                codes=state._codes.setdefault(keyset, {}),
                keys=keys,
                key_index=codes,
                time=entries.time[usable],
                value=entries.value[usable],
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
