"""Training runs: honest splits, calibrated models, MLflow runs and registry aliases, clear refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from training.compare import compare
from training.datasets import default_windows, split
from training.errors import ModelLoadError, TrainingError
from training.model import RiskModel
from training.tracking import CHALLENGER, CHAMPION, alias_version, load_registered
from training.train import train_model


def _train(tables, truth, model="node_congestion", **kwargs):
    table = tables[model]
    return train_model(model_name=model, table=table, windows=default_windows(table=table), truth=truth, **kwargs)


def test_windows_never_learn_from_the_future(tables):
    table = tables["carrier_delay"]
    plan = split(table=table, model="carrier_delay", windows=default_windows(table=table))
    w = plan.windows
    assert (plan.train["allocated_at"] < w.valid_start).all()
    assert (plan.valid["allocated_at"] < w.valid_end).all() and w.valid_end < w.test_start
    assert (plan.train["label_known_at"] < w.valid_start).all()
    assert (plan.valid["label_known_at"] < w.test_start).all()
    assert plan.test["allocated_at"].between(w.test_start, w.test_end, inclusive="left").all()
    # Rows decided before valid_start whose outcome was still open then are left out of training.
    open_then = table[(table["allocated_at"] < w.valid_start) & (table["label_known_at"] >= w.valid_start)]
    assert len(open_then) > 0 and not plan.train["shipment_id"].isin(open_then["shipment_id"]).any()


def test_a_run_logs_metrics_datasets_artifacts_and_registers_champion_and_challenger(tables, truth, tracking):
    first = _train(tables, truth)
    client = MlflowClient()
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    for key in (
        "test_auc",
        "test_logloss",
        "test_brier",
        "test_ece",
        "test_lift_top_decile",
        "base_rate",
        "baseline_logloss",
        "oracle_logloss",
        "oracle_auc",
        "true_logloss",
        "logloss_vs_oracle",
    ):
        assert key in run.data.metrics, key
    assert run.data.params["valid_start"] and run.data.params["test_end"]
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs for _ in [0] if i.tags}
    assert {"training", "validation", "testing"} <= contexts
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"features.json", "evaluation"} <= artifacts
    evaluation = {a.path for a in client.list_artifacts(first.run_id, "evaluation")}
    assert {"evaluation/calibration.png", "evaluation/feature_importance.png"} <= evaluation
    assert alias_version(model_name="node_congestion", alias=CHAMPION) == first.version == "1"
    assert alias_version(model_name="node_congestion", alias=CHALLENGER) == "1"

    second = _train(tables, truth)
    assert second.version == "2"
    assert alias_version(model_name="node_congestion", alias=CHAMPION) == "1"  # champion moves only by approval
    assert alias_version(model_name="node_congestion", alias=CHALLENGER) == "2"


def test_the_models_learn_and_stay_calibrated(tables, truth, tracking):
    """Small-scale sanity; the quality bars against the oracle are checked on the full scenario (benchmarks)."""
    carrier = _train(tables, truth, model="carrier_delay").metrics
    assert carrier["test_logloss"] < min(carrier["baseline_logloss"], carrier["base_logloss"])
    assert carrier["test_auc"] > 0.7 and carrier["test_ece"] < 0.03
    node = _train(tables, truth, model="node_congestion").metrics
    assert node["test_logloss"] < node["base_logloss"]
    assert node["test_auc"] > 0.6 and node["test_ece"] < 0.03


def test_platt_calibration_is_available(tables, truth, tracking):
    m = _train(tables, truth, calibration="platt").metrics
    assert m["test_ece"] < 0.05


def test_the_serving_wrapper_loads_by_alias_and_scores_without_pandas(tables, truth, tracking):
    report = _train(tables, truth, model="carrier_delay")
    loaded = load_registered(model_name="carrier_delay", alias=CHAMPION)
    assert loaded.version == report.version and loaded.run_id == report.run_id
    model = loaded.model
    rows = tables["carrier_delay"].tail(50)
    columns = {name: rows[name].to_numpy(dtype=object if name in model.codes_ else float) for name in model.features_}
    matrix = model.encode(columns)
    np.testing.assert_allclose(matrix, model.encode_frame(rows), equal_nan=True)
    proba = model.predict_proba(matrix)
    assert proba.shape == (50, 2) and np.allclose(proba.sum(axis=1), 1.0)
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(f"models:/carrier_delay@{CHAMPION}")
    np.testing.assert_allclose(pyfunc.predict(rows[list(model.features_)]), proba[:, 1], rtol=1e-9)
    # An unseen category is scored as missing, not refused.
    columns["carrier"] = np.array(["brand-new-carrier"] * 50, dtype=object)
    assert np.isfinite(model.risk(model.encode(columns))).all()
    # Large batches (backtests) take another encoding path: the same matrix.
    many = tables["carrier_delay"].tail(12_000)
    big = {
        name: np.array(many[name].to_numpy(dtype=object if name in model.codes_ else float), copy=True)
        for name in model.features_
    }
    big["carrier"][::7] = "brand-new-carrier"
    small = np.vstack([model.encode({k: v[i : i + 1_000] for k, v in big.items()}) for i in range(0, 12_000, 1_000)])
    np.testing.assert_allclose(model.encode(big), small, equal_nan=True)


def test_a_model_whose_parts_disagree_is_refused_at_load(tables, truth, tracking, tmp_path):
    table = tables["node_congestion"]
    plan = split(table=table, model="node_congestion", windows=default_windows(table=table))
    model = RiskModel(model_name="node_congestion", features=plan.features, categorical=plan.categorical)
    model.fit(train=plan.train, valid=plan.valid)
    model.save(folder=tmp_path / "m")
    meta = (tmp_path / "m" / "model.json").read_text()
    (tmp_path / "m" / "model.json").write_text(meta.replace('"hour"', '"hour_of_day"'))
    with pytest.raises(ModelLoadError, match="feature"):
        RiskModel.load(folder=tmp_path / "m")
    with pytest.raises(ModelLoadError, match="no registered model"):
        load_registered(model_name="node_congestion", alias=CHAMPION)


def test_a_failed_run_ends_failed_with_its_reason_and_registers_nothing(tables, truth, tracking, monkeypatch):
    def broken_fit(self, **kwargs):
        raise RuntimeError("disk full while boosting")

    monkeypatch.setattr(RiskModel, "fit", broken_fit)
    with pytest.raises(RuntimeError, match="disk full"):
        _train(tables, truth)
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("node_congestion").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "disk full" in runs[0].data.tags["failure_reason"]
    assert client.search_model_versions("name='node_congestion'") == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.assign(label=np.nan), "no known outcomes"),
        (lambda t: t.assign(label=0.0), "one class only"),
        (lambda t: t.sample(frac=0.03, random_state=0), "too few rows"),
        (
            lambda t: t.assign(
                node_late_rate_7d=np.where(
                    t["allocated_at"] < t["allocated_at"].quantile(0.7), np.nan, t["node_late_rate_7d"]
                )
            ),
            "empty throughout the training",
        ),
    ],
)
def test_bad_training_input_is_refused_before_any_run(tables, tracking, change, message):
    table = change(tables["node_congestion"].copy())
    with pytest.raises(TrainingError, match=message):
        windows = default_windows(table=table)
        train_model(model_name="node_congestion", table=table, windows=windows)
    client = MlflowClient()
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_window_outside_the_data_is_named(tables, tracking):
    table = tables["node_congestion"]
    windows = default_windows(table=table, test_start=pd.Timestamp("2030-01-01"), test_end=pd.Timestamp("2030-02-01"))
    with pytest.raises(TrainingError, match="outside the data"):
        train_model(model_name="node_congestion", table=table, windows=windows)


def test_compare_rescores_champion_and_challenger_on_the_same_window(tables, truth, tracking):
    _train(tables, truth)
    second = _train(tables, truth)
    result = compare(model_name="node_congestion")
    assert [c.label for c in result.contenders] == ["champion v1", "challenger v2"]
    assert result.window_run_id == second.run_id
    assert result.rows == second.rows["test"]
    champion, challenger = result.contenders
    assert challenger.scores["logloss"] == pytest.approx(second.metrics["test_logloss"])
    assert result.deltas()[1]["logloss"] == pytest.approx(challenger.scores["logloss"] - champion.scores["logloss"])


def test_compare_refuses_a_window_a_contender_was_fitted_on(tables, truth, tracking):
    table = tables["node_congestion"]
    late = train_model(model_name="node_congestion", table=table, windows=default_windows(table=table), truth=truth)
    early_windows = default_windows(
        table=table,
        test_start=late.windows.test_start - pd.Timedelta(days=14),
        test_end=late.windows.test_start - pd.Timedelta(days=7),
    )
    early = train_model(model_name="node_congestion", table=table, windows=early_windows, truth=truth)
    with pytest.raises(TrainingError, match="scored on data it learned from"):
        compare(model_name="node_congestion", runs=[late.run_id, early.run_id])
