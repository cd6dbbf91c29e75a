"""The offline feature builder: vectorised as-of aggregation over a whole history frame.

Each stream (delivery outcomes, handover outcomes, allocations, ...) is sorted once by
(key, known time); a window count for many rows is then two binary searches into that order and a
difference of cumulative sums. Entries count only when known strictly before the row's time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from features.definitions import (
    AGGREGATES,
    DAY,
    KEY_SHIFT,
    LOOKBACK_SECONDS,
    MODEL_FEATURES,
    STREAM_KEYS,
    Notices,
    active_disruptions,
    derive_features,
    epoch_seconds,
    static_features,
    window_bounds,
)
from features.errors import HistoryError
from features.history import History
from features.labels import carrier_delay_outcome, carrier_exception, history_as_of, late_handover_outcome
from features.storage import staged_folder

ID_COLUMNS = ("shipment_id", "allocated_at")


@dataclass(frozen=True)
class StreamEntries:
    """Entries of one stream: when each became known, its value, and its key attributes."""

    time: np.ndarray
    value: np.ndarray
    attrs: dict[str, np.ndarray]

    def select(self, mask: np.ndarray) -> StreamEntries:
        """The entries where mask is true."""
        return StreamEntries(self.time[mask], self.value[mask], {k: v[mask] for k, v in self.attrs.items()})


def build_streams(
    *,
    shipments: pd.DataFrame,
    as_of: np.datetime64 | None = None,
    outcomes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, StreamEntries]:
    """Every stream's entries from a shipment history (reusing its outcomes when already computed)."""
    as_of = history_as_of(shipments=shipments) if as_of is None else as_of
    outcomes = outcomes or label_outcomes(shipments=shipments, as_of=as_of)

    columns: dict[str, np.ndarray] = {}

    def column(key: str) -> np.ndarray:
        # Converted once for all streams; a key column the history lacks reads as missing, which matches nothing.
        if key not in columns:
            present = key in shipments.columns
            columns[key] = shipments[key].to_numpy(dtype=object) if present else np.full(len(shipments), None)
        return columns[key]

    def attrs(stream: str, mask: np.ndarray) -> dict[str, np.ndarray]:
        return {k: column(k)[mask] for k in STREAM_KEYS[stream]}

    def entries(stream: str, known: np.ndarray, value: np.ndarray) -> StreamEntries:
        mask = ~np.isnat(known)
        return StreamEntries(epoch_seconds(known[mask]), value[mask].astype(np.float64), attrs(stream, mask))

    delivery_label, delivery_known = outcomes["carrier_delay"]
    handover_label, handover_known = outcomes["node_congestion"]
    allocated = shipments["allocated_at"].to_numpy(dtype="datetime64[s]")
    handed = shipments["handed_over_at"].to_numpy(dtype="datetime64[s]")
    exception_at = (
        shipments["exception_at"].to_numpy(dtype="datetime64[s]")
        if "exception_at" in shipments.columns
        else np.full(len(shipments), np.datetime64("NaT", "s"))
    )
    carrier_flag = carrier_exception(shipments=shipments)
    ones = np.ones(len(shipments))
    delivered = shipments["delivered_at"].to_numpy(dtype="datetime64[s]")
    transit_days = (delivered.astype("datetime64[D]") - handed.astype("datetime64[D]")).astype(np.float64)
    on_time = delivery_label == 0.0
    return {
        "delivery": entries("delivery", delivery_known, delivery_label),
        "handover": entries("handover", handover_known, handover_label),
        "allocation": entries("allocation", allocated, ones),
        "handed": entries("handed", handed, ones),
        "carrier_exception": entries(
            "carrier_exception", np.where(carrier_flag, exception_at, np.datetime64("NaT", "s")), ones
        ),
        "transit": entries("transit", np.where(on_time, delivered, np.datetime64("NaT", "s")), transit_days),
    }


@dataclass(frozen=True)
class RowKey:
    """One key column of a batch of rows, factorized: a code per row (-1 when missing) into its distinct values."""

    codes: np.ndarray
    uniques: np.ndarray

    @classmethod
    def of(cls, column: np.ndarray) -> RowKey:
        """Factorize a column (None and NaN are missing)."""
        codes, uniques = pd.factorize(np.asarray(column, dtype=object), use_na_sentinel=True)
        return cls(codes=codes, uniques=np.asarray(uniques, dtype=object))


class _EntryIndex:
    """One stream's entries sorted by (key, time), answering window sums for rows of any keys.

    Built once per stream and key set; rows are coded against the entries' own key values, so one
    index serves any number of row batches (a twin run prices every decision wave of a day with it).
    """

    def __init__(self, *, entries: StreamEntries, keys: tuple[str, ...]):
        code = np.zeros(len(entries.time), dtype=np.int64)
        self.levels: list[tuple[pd.Index, int, pd.Index]] = []
        for key in keys:
            values, uniques = pd.factorize(entries.attrs[key].astype(object), use_na_sentinel=True)
            combined = code * np.int64(len(uniques) + 1) + (values.astype(np.int64) + 1)  # 0 is the missing value
            # Re-number the combinations densely, so many key columns never overflow the composite key.
            dense, combos = pd.factorize(combined)
            # Object, not string-dtype, indexes: looking rows up in them is several times faster.
            self.levels.append((pd.Index(uniques, dtype=object), len(uniques), pd.Index(combos)))
            code = dense.astype(np.int64)
        order = np.lexsort((entries.time, code))
        self.composite = code[order] * KEY_SHIFT + entries.time[order]
        self.cumulative = np.concatenate([[0.0], np.cumsum(entries.value[order])])

    def row_codes(self, *, rows: dict[str, RowKey], keys: tuple[str, ...]) -> np.ndarray:
        """Each row's key code; -1 (matching nothing) for a missing key or a key no entry has."""
        n_rows = len(next(iter(rows.values())).codes)
        code = np.zeros(n_rows, dtype=np.int64)
        unmatched = np.zeros(n_rows, dtype=bool)
        for key, (uniques, size, combos) in zip(keys, self.levels):
            column = rows[key]
            # Looked up once per distinct row value, then spread: rows repeat a few keys many times.
            found = uniques.get_indexer(pd.Index(column.uniques, dtype=object))
            values = np.append(found, -1)[column.codes]  # code -1 (missing) reads the appended -1
            # A missing row key never matches an entry whose key is missing; an unseen value matches nothing.
            unmatched |= values < 0
            combined = code * np.int64(size + 1) + (values.astype(np.int64) + 1)
            code = combos.get_indexer(combined).astype(np.int64)
            unmatched |= code < 0
        return np.where(unmatched, -1, code)

    def window(self, *, row_code: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Count and sum of entries with lo <= time < hi for each row's key (nothing for code -1)."""
        base = row_code * KEY_SHIFT
        i_hi = np.searchsorted(self.composite, base + hi, side="left")
        i_lo = np.searchsorted(self.composite, base + lo, side="left")
        i_lo = np.minimum(i_lo, i_hi)
        i_hi = np.where(row_code < 0, i_lo, i_hi)
        return (i_hi - i_lo).astype(np.int64), self.cumulative[i_hi] - self.cumulative[i_lo]


def node_state_at(*, node_days: pd.DataFrame | None, node_id: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """Capacity and start-of-day backlog of the row's node on t's day, known from that day's midnight."""
    n = len(t)
    state = {"capacity": np.full(n, np.nan), "backlog_start": np.full(n, np.nan)}
    if node_days is None or node_days.empty:
        return state
    day_start = epoch_seconds(node_days["date"].to_numpy(dtype="datetime64[s]"))
    lookup = pd.Series(
        np.arange(len(node_days)),
        index=pd.MultiIndex.from_arrays([node_days["node_id"].to_numpy(dtype=object), day_start]),
    )
    lookup = lookup[~lookup.index.duplicated(keep="last")]
    midnight = t - t % DAY
    position = lookup.reindex(pd.MultiIndex.from_arrays([node_id, midnight])).to_numpy()
    found = ~np.isnan(position) & (t > midnight)
    index = np.where(found, position, 0).astype(np.int64)
    for column in ("capacity", "backlog_start"):
        values = node_days[column].to_numpy(dtype=np.float64)[index]
        state[column] = np.where(found, values, np.nan)
    return state


def features_for_rows(
    *,
    rows: pd.DataFrame | dict[str, np.ndarray],
    streams: dict[str, StreamEntries],
    node_days: pd.DataFrame | None,
    notices: pd.DataFrame | None,
    indexes: dict | None = None,
) -> dict[str, np.ndarray]:
    """Every feature for each decision row (frame or column arrays), from stream entries known before its time.

    `indexes` may be a dict kept by the caller across calls over the same streams: the sorted
    entries are then built once, not per call.
    """
    t = epoch_seconds(rows["allocated_at"])
    static = static_features(rows=rows)
    key_columns = {
        k: RowKey.of(static[k]) for k in ("carrier", "service", "origin_region", "dest_region", "node_type", "node_id")
    }
    aggregates: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    indexes = {} if indexes is None else indexes
    row_codes: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
    for aggregate in AGGREGATES:
        index_key = (aggregate.stream, aggregate.keys)
        if index_key not in indexes:
            indexes[index_key] = _EntryIndex(entries=streams[aggregate.stream], keys=aggregate.keys)
        if index_key not in row_codes:
            row_codes[index_key] = indexes[index_key].row_codes(rows=key_columns, keys=aggregate.keys)
        lo, hi = window_bounds(window=aggregate.window, t=t)
        aggregates[aggregate.name] = indexes[index_key].window(row_code=row_codes[index_key], lo=lo, hi=hi)
    return derive_features(
        static=static,
        aggregates=aggregates,
        node_state=node_state_at(node_days=node_days, node_id=static["node_id"], t=t),
        disruptions=active_disruptions(
            notices=Notices.from_records(notices), t=t, carrier=static["carrier"], dest_region=static["dest_region"]
        ),
    )


def model_frame(*, rows: pd.DataFrame, features: dict[str, np.ndarray], model: str, labels: dict) -> pd.DataFrame:
    """One model's feature table: ids, its features in order, its label and when that label became known."""
    columns = {c: rows[c].to_numpy() for c in ID_COLUMNS}
    for name in MODEL_FEATURES[model]:
        columns[name] = features[name]
    label, known = labels[model]
    columns["label"] = label
    columns["label_known_at"] = known
    frame = pd.DataFrame(columns)
    for name in frame.columns:
        if frame[name].dtype == object:
            frame[name] = frame[name].astype("str")
    return frame


@dataclass(frozen=True)
class Prepared:
    """What every chunk of one history shares: its streams and its labels."""

    streams: dict[str, StreamEntries]
    labels: dict[str, tuple[np.ndarray, np.ndarray]]


def label_outcomes(*, shipments: pd.DataFrame, as_of: np.datetime64) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each model's label and when it became known."""
    return {
        "carrier_delay": carrier_delay_outcome(shipments=shipments, as_of=as_of),
        "node_congestion": late_handover_outcome(shipments=shipments, as_of=as_of),
    }


def prepare(*, history: History) -> Prepared:
    """Streams and labels of a history, computed once."""
    shipments = history.shipments
    as_of = history_as_of(shipments=shipments)
    labels = label_outcomes(shipments=shipments, as_of=as_of)
    return Prepared(streams=build_streams(shipments=shipments, as_of=as_of, outcomes=labels), labels=labels)


def build_features(
    *,
    history: History,
    start: np.datetime64 | None = None,
    end: np.datetime64 | None = None,
    prepared: Prepared | None = None,
) -> dict[str, pd.DataFrame]:
    """Feature tables for both models, for rows allocated in [start, end) (all rows by default)."""
    prepared = prepared or prepare(history=history)
    shipments = history.shipments
    allocated = shipments["allocated_at"].to_numpy(dtype="datetime64[s]")
    selected = np.ones(len(shipments), dtype=bool)
    if start is not None:
        selected &= allocated >= start
    if end is not None:
        selected &= allocated < end
    streams = prepared.streams
    if start is not None:
        # Only what a window can reach matters: entries known from the look-back on, before the end.
        horizon = epoch_seconds(np.array([start]))[0] - LOOKBACK_SECONDS
        stop = epoch_seconds(np.array([end]))[0] if end is not None else np.iinfo(np.int64).max
        streams = {name: s.select((s.time >= horizon) & (s.time < stop)) for name, s in streams.items()}
    rows = shipments[selected].reset_index(drop=True)
    features = features_for_rows(rows=rows, streams=streams, node_days=history.node_days, notices=history.notices)
    labels = {model: tuple(a[selected] for a in pair) for model, pair in prepared.labels.items()}
    return {model: model_frame(rows=rows, features=features, model=model, labels=labels) for model in MODEL_FEATURES}


def build_features_chunked(
    *,
    history: History,
    out_dir: Path,
    chunk_days: int = 7,
    on_chunk: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Build features chunk by chunk (a time range plus its look-back) into Parquet partitions per model."""
    if chunk_days < 1:
        raise HistoryError("chunk_days must be at least 1")
    allocated = history.shipments["allocated_at"]
    if allocated.empty:
        raise HistoryError(f"{history.source}: the history has no shipments")
    first = allocated.min().normalize()
    last = allocated.max()
    bounds = pd.date_range(first, last + timedelta(days=chunk_days), freq=f"{chunk_days}D")
    rows_written = {model: 0 for model in MODEL_FEATURES}
    chunks = list(zip(bounds[:-1], bounds[1:]))
    prepared = prepare(history=history)
    # All partitions appear together or not at all: a crash leaves the previous build in place.
    with staged_folder(out_dir=out_dir) as staging:
        for i, (lo, hi) in enumerate(chunks):
            tables = build_features(
                history=history,
                start=np.datetime64(lo.to_datetime64(), "s"),
                end=np.datetime64(hi.to_datetime64(), "s"),
                prepared=prepared,
            )
            for model, frame in tables.items():
                if frame.empty:
                    continue
                target = staging / model / f"part-{lo:%Y%m%d}.parquet"
                target.parent.mkdir(parents=True, exist_ok=True)
                frame.to_parquet(target, index=False)
                rows_written[model] += len(frame)
            if on_chunk is not None:
                on_chunk(i + 1, len(chunks))
    return rows_written


def read_features(*, folder: Path, model: str) -> pd.DataFrame:
    """All partitions of one model's features, in time order."""
    parts = sorted((folder / model).glob("part-*.parquet"))
    if not parts:
        raise HistoryError(f"{folder / model}: no feature partitions; run `riskroute features build` first")
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    for column in ("allocated_at", "label_known_at"):
        frame[column] = frame[column].astype("datetime64[s]")
    return frame
