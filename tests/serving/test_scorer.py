"""The model-backed scorer: online features and registered models give the offline answer, or a flagged baseline."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from features.events import events_from_history
from features.offline import features_for_rows, prepare
from features.online import OnlineFeatureState
from rules.engine import RiskQueries
from rules.schema import load_ruleset, seed_ruleset_path
from serving.runtime import Runtime, compile_in_background
from serving.scorer import ModelScorer, ModelSet, query_rows
from serving.settings import Settings
from tests.conftest import queries_of, served_models
from training.evaluation import historical_rate


@pytest.fixture(scope="module")
def served(champions_store):
    """Both models trained on the ten-week twin and loaded from the registry as @champion."""
    return served_models(store=champions_store)


@pytest.fixture(scope="module")
def at_decision(twin):
    """A decision time in the test window, the state that has seen every event before it, and 60 candidates."""
    shipments = twin.shipments
    decided = shipments["allocated_at"].quantile(0.9).floor("h")
    events = events_from_history(history=twin)
    state = OnlineFeatureState()
    state.ingest_frame(events[events["event_time"] < decided])
    rows = shipments[shipments["allocated_at"] >= decided].head(60).copy()
    rows["allocated_at"] = decided
    queries = queries_of(rows)
    return decided, state, queries


def test_online_scores_equal_the_offline_model_on_the_same_rows(twin, served, at_decision):
    decided, state, queries = at_decision
    scores = ModelScorer(models=served, state=state, freshness_limit=timedelta(hours=6)).score(queries)
    assert not scores.degraded.any() and scores.notes == []
    assert scores.model_versions == {"carrier_delay": "1", "node_congestion": "1"}
    offline = features_for_rows(
        rows=query_rows(queries=queries),
        streams=prepare(history=twin).streams,
        node_days=twin.node_days,
        notices=twin.notices,
    )
    frame = pd.DataFrame(offline)
    np.testing.assert_allclose(scores.carrier_delay, served.carrier_delay.model.risk_frame(frame), rtol=1e-9)
    np.testing.assert_allclose(scores.node_congestion, served.node_congestion.model.risk_frame(frame), rtol=1e-9)
    assert 0 < scores.carrier_delay.mean() < 0.5


def test_stale_features_fall_back_to_the_historical_rate_flagged_degraded(served, at_decision):
    decided, state, queries = at_decision
    later = RiskQueries(**{**queries.__dict__, "decided_at": [decided + pd.Timedelta(hours=3)] * len(queries)})
    scores = ModelScorer(models=served, state=state, freshness_limit=timedelta(minutes=30)).score(later)
    assert scores.degraded.all()
    assert any("old" in note for note in scores.notes)
    features = state.features(rows=query_rows(queries=later))
    np.testing.assert_allclose(
        scores.carrier_delay, historical_rate(model_name="carrier_delay", table=features, base_rate=0.07)
    )


def test_a_missing_model_degrades_only_its_own_risk(served, at_decision):
    _, state, queries = at_decision
    scores = ModelScorer(
        models=ModelSet(carrier_delay=None, node_congestion=served.node_congestion),
        state=state,
        freshness_limit=timedelta(hours=6),
    ).score(queries)
    assert scores.degraded.all() and scores.notes == [
        "carrier_delay: historical-rate baseline (no carrier_delay model is loaded)"
    ]
    assert scores.model_versions == {"node_congestion": "1"}


def test_the_service_compiles_its_models_in_the_background_and_scores_exactly_the_same(
    champions_store, at_decision, tmp_path
):
    _, state, queries = at_decision
    models = served_models(store=champions_store)  # its own copies: compiling changes how they predict
    runtime = Runtime(
        settings=Settings(data_dir=tmp_path, freshness_limit_minutes=360),
        ruleset=load_ruleset(path=seed_ruleset_path()),
        models=models,
        state=state,
    )
    before = runtime.scorer.score(queries)
    assert not before.degraded.any()  # the models answer, not the baseline
    assert models.compiled() == {"carrier_delay": False, "node_congestion": False}
    compile_in_background(runtime=runtime).join(timeout=600)
    assert models.compiled() == {"carrier_delay": True, "node_congestion": True}
    after = runtime.scorer.score(queries)
    np.testing.assert_allclose(after.carrier_delay, before.carrier_delay, rtol=0, atol=1e-12)
    np.testing.assert_allclose(after.node_congestion, before.node_congestion, rtol=0, atol=1e-12)
    assert compile_in_background(runtime=runtime) is None  # nothing left to compile

    runtime.settings = Settings(data_dir=tmp_path, compile_models=False)
    runtime.models = served_models(store=champions_store)
    assert compile_in_background(runtime=runtime) is None
    assert runtime.models.compiled() == {"carrier_delay": False, "node_congestion": False}
