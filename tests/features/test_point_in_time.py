"""Point-in-time correctness: features at t use only what was known before t, offline and online alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import features.offline as offline
from features.definitions import KEY_SHIFT, MODEL_FEATURES
from features.events import events_from_history
from features.history import History
from features.offline import build_features, build_features_chunked, features_for_rows, prepare, read_features
from features.online import OnlineFeatureState
from features.schema import validate_events
from features.twin.simulate import simulate
from tests.conftest import small_scenario

FEATURE_NAMES = sorted(set(MODEL_FEATURES["carrier_delay"]) | set(MODEL_FEATURES["node_congestion"]))


def _features(history: History, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    return features_for_rows(
        rows=rows, streams=prepare(history=history).streams, node_days=history.node_days, notices=history.notices
    )


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise equality, NaN equal to NaN, categoricals compared as values."""
    if a.dtype == object or b.dtype == object:
        return np.array([x == y or (pd.isna(x) and pd.isna(y)) for x, y in zip(a, b)], dtype=bool)
    return np.isclose(a.astype(float), b.astype(float), rtol=1e-12, atol=1e-12, equal_nan=True)


def _replay(*, state: OnlineFeatureState, events: pd.DataFrame, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Apply events in order and ask the state for each row's features at its decision time."""
    event_times = events["event_time"].to_numpy(dtype="datetime64[s]")
    records = events.to_dict("records")
    query_times = rows["allocated_at"].to_numpy(dtype="datetime64[s]")
    answers = {name: np.empty(len(rows), dtype=object) for name in FEATURE_NAMES}
    next_event = 0
    for t in np.unique(query_times):
        while next_event < len(records) and event_times[next_event] < t:
            state.ingest(records[next_event])
            next_event += 1
        at_t = np.flatnonzero(query_times == t)
        answer = state.features(rows=rows.iloc[at_t])
        for name in FEATURE_NAMES:
            answers[name][at_t] = answer[name]
    return answers


def _mismatches(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> dict[str, int]:
    """Features that differ, with how many rows differ."""
    return {
        name: int((~_same(expected[name], actual[name])).sum())
        for name in FEATURE_NAMES
        if not _same(expected[name], actual[name]).all()
    }


@pytest.fixture(scope="module")
def tiny_history() -> History:
    """Two weeks of a quiet network: small enough to replay event by event."""
    run = simulate(scenario=small_scenario(days=14, orders_per_day=150))
    from features.schema import validate_shipments

    shipments, report = validate_shipments(frame=run.shipments)
    assert report.ok
    return History(shipments=shipments, node_days=run.node_days, notices=run.notices)


def _mutate_outcomes_after(*, shipments: pd.DataFrame, t: pd.Timestamp, rng: np.random.Generator) -> pd.DataFrame:
    """Change, at random, outcomes that only become known after t (to other outcomes also known after t)."""
    out = shipments.copy()
    handed = out["handed_over_at"]
    delivered = out["delivered_at"]
    later_handover = handed.notna() & (handed > t) & (rng.random(len(out)) < 0.5)
    shift = pd.to_timedelta(rng.integers(1, 4 * 86_400, size=len(out)), unit="s")
    out.loc[later_handover, "handed_over_at"] = (t + shift[later_handover.to_numpy()]).astype("datetime64[s]")
    pending = out["handed_over_at"].notna() & delivered.notna() & (delivered > t) & (rng.random(len(out)) < 0.6)
    floor = np.maximum(out["handed_over_at"].fillna(t), t)
    new_delivery = floor + pd.to_timedelta(rng.integers(3600, 12 * 86_400, size=len(out)), unit="s")
    out.loc[pending, "delivered_at"] = new_delivery[pending].astype("datetime64[s]")
    # Some pending deliveries never arrive: lost, declared after t.
    lost = pending & out["exception_codes"].isna() & (rng.random(len(out)) < 0.1)
    out.loc[lost, "delivered_at"] = pd.NaT
    out.loc[lost, "exception_codes"] = "lost"
    out.loc[lost, "exception_at"] = new_delivery[lost].astype("datetime64[s]")
    return out


def _leak_check(history: History, t_index: int, seed: int) -> list[str]:
    """Names of features at or before t that changed when outcomes known after t changed."""
    shipments = history.shipments
    times = np.sort(shipments["allocated_at"].unique())
    t = pd.Timestamp(times[t_index])
    rows = shipments[shipments["allocated_at"] <= t].reset_index(drop=True)
    before = _features(history, rows)
    mutated = History(
        shipments=_mutate_outcomes_after(shipments=shipments, t=t, rng=np.random.default_rng(seed)),
        node_days=history.node_days,
        notices=history.notices,
    )
    after = _features(mutated, rows)
    return [name for name in FEATURE_NAMES if not _same(before[name], after[name]).all()]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(quantile=st.floats(min_value=0.3, max_value=0.95), seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_outcomes_known_after_t_never_change_features_at_t(tiny_history, quantile, seed):
    n_times = tiny_history.shipments["allocated_at"].nunique()
    assert _leak_check(tiny_history, int(quantile * (n_times - 1)), seed) == []


def test_the_leak_check_catches_a_leaky_definition(tiny_history, monkeypatch):
    """If delivery outcomes were counted from allocation time (a classic leak), the check must fail."""
    honest = offline.carrier_delay_outcome

    def leaky(*, shipments, as_of=None):
        label, _ = honest(shipments=shipments, as_of=as_of)
        known = shipments["allocated_at"].to_numpy(dtype="datetime64[s]")
        return label, np.where(np.isnan(label), np.datetime64("NaT", "s"), known)

    monkeypatch.setattr(offline, "carrier_delay_outcome", leaky)
    n_times = tiny_history.shipments["allocated_at"].nunique()
    changed = _leak_check(tiny_history, int(0.7 * (n_times - 1)), seed=1)
    assert "lane_late_rate_7d" in changed


def test_offline_and_online_agree_after_replaying_the_same_events(tiny_history):
    shipments = tiny_history.shipments
    offline_features = _features(tiny_history, shipments)
    events = events_from_history(history=tiny_history)
    _, report = validate_events(frame=events)
    assert report.ok, report.problems[:5]
    online_features = _replay(state=OnlineFeatureState(), events=events, rows=shipments)
    assert _mismatches(offline_features, online_features) == {}
    # The comparison is not vacuous: the rolling rates are mostly known, not all missing.
    assert np.isfinite(offline_features["lane_late_rate_28d"].astype(float)).mean() > 0.7
    assert np.nanmax(offline_features["assigned_today"].astype(float)) > 10


def test_one_online_query_answers_rows_at_many_times_each_at_its_own_time(tiny_history):
    """A batch whose rows were decided at different times: each row sees only what was known before its time."""
    shipments = tiny_history.shipments
    events = events_from_history(history=tiny_history)
    cutoff = shipments["allocated_at"].quantile(0.8)
    state = OnlineFeatureState()
    state.ingest_frame(events[events["event_time"] < cutoff])
    rows = shipments[shipments["allocated_at"] < cutoff].tail(400).reset_index(drop=True)
    assert rows["allocated_at"].nunique() > 100
    assert _mismatches(_features(tiny_history, rows), state.features(rows=rows)) == {}


def test_online_state_refuses_events_out_of_time_order(tiny_history):
    events = events_from_history(history=tiny_history)
    state = OnlineFeatureState()
    state.ingest(events.iloc[100].to_dict())
    from features.errors import FeaturesError

    with pytest.raises(FeaturesError, match="time order"):
        state.ingest(events.iloc[10].to_dict())


def test_chunked_build_equals_full_build(tmp_path, small_history):
    full = build_features(history=small_history)
    build_features_chunked(history=small_history, out_dir=tmp_path, chunk_days=5)
    for model in MODEL_FEATURES:
        chunked = read_features(folder=tmp_path, model=model).set_index("shipment_id").sort_index()
        whole = full[model].set_index("shipment_id").sort_index()
        pd.testing.assert_frame_equal(chunked, whole)
    parts = sorted(p.name for p in (tmp_path / "carrier_delay").glob("part-*.parquet"))
    assert len(parts) == 5  # 21 days in chunks of 5


def test_feature_tables_carry_labels_and_when_they_became_known(small_history):
    tables = build_features(history=small_history)
    for model, table in tables.items():
        assert list(table.columns[2:-2]) == list(MODEL_FEATURES[model])
        known = table.dropna(subset=["label"])
        assert (known["label_known_at"] > known["allocated_at"]).all()
        assert 0.01 < known["label"].mean() < 0.5


def test_a_query_ahead_of_the_events_does_not_settle_outcomes_a_late_event_contradicts():
    """Asked at 10:00 before the 09:20 handover arrives, the state counts the parcel late; after, on time."""
    state = OnlineFeatureState()
    base = {
        "node_id": "DC01",
        "node_type": "dc",
        "carrier": "c",
        "service": "ground",
        "origin_region": "nw",
        "dest_region": "nw",
        "distance_km": 10.0,
        "promised_delivery": pd.Timestamp("2026-01-08"),
    }
    state.ingest(
        {
            **base,
            "event_id": "a",
            "event_type": "allocated",
            "event_time": pd.Timestamp("2026-01-05 09:00"),
            "shipment_id": "S1",
            "ship_by": pd.Timestamp("2026-01-05 09:30"),
        }
    )
    query = pd.DataFrame(
        [{**base, "allocated_at": pd.Timestamp("2026-01-05 10:00"), "ship_by": pd.Timestamp("2026-01-05 16:00")}]
    )
    before = state.features(rows=query)
    assert before["node_outcomes_7d"][0] == 1 and before["node_late_rate_1d"][0] > 0.5
    state.ingest(
        {
            **base,
            "event_id": "h",
            "event_type": "handed_over",
            "event_time": pd.Timestamp("2026-01-05 09:20"),
            "shipment_id": "S1",
        }
    )
    after = state.features(rows=query)
    assert after["node_outcomes_7d"][0] == 1 and after["node_late_rate_1d"][0] < 0.5


def test_a_warm_start_continues_exactly_like_a_full_replay(tiny_history):
    """Bulk-loading the state at T and then applying the events after T gives the offline features."""
    from features.online import warm_start

    shipments = tiny_history.shipments
    cutoff = shipments["allocated_at"].quantile(0.6).floor("h")
    state = warm_start(history=tiny_history, as_of=cutoff)
    events = events_from_history(history=tiny_history)
    rows = shipments[shipments["allocated_at"] >= cutoff].reset_index(drop=True)
    online_features = _replay(state=state, events=events[events["event_time"] >= cutoff], rows=rows)
    assert _mismatches(_features(tiny_history, rows), online_features) == {}
    assert len(rows) > 500


@given(
    entries=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 500), st.sampled_from([0.0, 1.0, 2.5])),
        max_size=300,
    ),
    queries=st.lists(
        st.tuples(st.sampled_from(["a", "b", "z"]), st.integers(0, 520), st.integers(0, 200)), min_size=1, max_size=20
    ),
    settle_every=st.integers(1, 10),
)
@settings(max_examples=60, deadline=None)
def test_the_online_entry_index_counts_windows_exactly_however_entries_arrive(entries, queries, settle_every):
    """Sorted part, tail, inbox, settling and merges together answer like a brute-force count."""
    from features.online import _KeyedEntries

    index = _KeyedEntries()
    index.MERGE_AT = 7  # merge often, so queries meet merged, half-merged and tail-only states
    for i, (key, when, value) in enumerate(entries):
        index.add(key=(key,), time=when, value=value)
        if i % settle_every == 0:
            index.settle()
    index.settle()
    keys = [(q[0],) for q in queries]
    lo = np.array([q[1] - q[2] for q in queries])
    hi = np.array([q[1] for q in queries])
    base = np.array([index.codes.get(k, -1) for k in keys], dtype=np.int64) * KEY_SHIFT
    counts, totals = np.zeros(len(queries), dtype=np.int64), np.zeros(len(queries))
    index.windows(bounds=np.stack([base + lo, base + hi]), counts=counts, totals=totals)
    for g, (key, t_hi, width) in enumerate(queries):
        inside = [v for k, w, v in entries if k == key and t_hi - width <= w < t_hi]
        assert counts[g] == len(inside) and totals[g] == pytest.approx(sum(inside))


def test_a_node_days_figures_are_known_only_after_the_midnight_they_are_stamped_at():
    state = OnlineFeatureState()
    state.ingest(
        {
            "event_id": "cap-1",
            "event_type": "node_capacity",
            "event_time": "2026-11-02T00:00:00",
            "node_id": "DC01",
            "capacity": 120,
            "backlog_start": 30,
        }
    )
    at = np.array(["2026-11-02T00:00:00", "2026-11-02T00:00:01", "2026-11-03T00:00:01"], dtype="datetime64[s]")
    rows = {
        "allocated_at": at,
        "node_id": np.array(["DC01", "DC01", "DC01"], dtype=object),
        "promised_delivery": np.array(["2026-11-05"] * 3, dtype="datetime64[s]"),
    }
    features = state.features(rows=rows)
    assert np.isnan(features["capacity_today"][0]) and np.isnan(features["backlog_start"][0])
    assert features["capacity_today"][1] == 120 and features["backlog_start"][1] == 30
    assert features["utilisation_so_far"][1] == pytest.approx(30 / 120)
    assert np.isnan(features["capacity_today"][2])  # the next day has no figures yet


def test_the_state_says_which_nodes_carriers_and_lanes_it_has_no_history_of():
    state = OnlineFeatureState()
    shipment = {
        "shipment_id": "S1",
        "node_id": "DC01",
        "node_type": "dc",
        "carrier": "parcelway",
        "service": "ground",
        "origin_region": "nw",
        "dest_region": "se",
        "ship_by": "2026-11-02T18:00:00",
        "promised_delivery": "2026-11-05",
    }
    rows = {
        "allocated_at": np.array(["2026-11-04T12:00:00"] * 4, dtype="datetime64[s]"),
        "node_id": np.array(["DC01", "DC09", "DC01", "DC01"], dtype=object),
        "carrier": np.array(["parcelway", "parcelway", "ecopost", "parcelway"], dtype=object),
        "origin_region": np.array(["nw", "nw", "nw", None], dtype=object),
        "dest_region": np.array(["se", "se", "se", "se"], dtype=object),
        "promised_delivery": np.array(["2026-11-06"] * 4, dtype="datetime64[s]"),
    }

    def unknown():
        return state.lookup(rows=rows)[1]

    assert unknown() == [("node", "carrier", "lane")] * 4
    state.ingest({"event_id": "e1", "event_type": "allocated", "event_time": "2026-11-02T09:00:00", **shipment})
    # An allocation makes the node and carrier known; a lane is known by its first delivery outcome.
    assert unknown() == [("lane",), ("node", "lane"), ("carrier", "lane"), ("lane",)]
    state.ingest(
        {"event_id": "e2", "event_type": "handed_over", "event_time": "2026-11-02T15:00:00", "shipment_id": "S1"}
    )
    state.ingest(
        {"event_id": "e3", "event_type": "delivered", "event_time": "2026-11-04T10:00:00", "shipment_id": "S1"}
    )
    assert unknown() == [(), ("node",), ("carrier", "lane"), ("lane",)]
