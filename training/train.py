"""One training run: split, fit, evaluate beside the yardsticks, log to MLflow, register a version."""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd

from training.datasets import Split, Windows, split
from training.evaluation import calibration_plot, evaluate_all, importance_plot
from training.metrics import evaluate
from training.model import RiskModel
from training.tracking import TEST_TABLE_ARTIFACT, log_model, register, tracked_run


@dataclass(frozen=True)
class TrainReport:
    """What a run produced: where it is, the version it registered, and its figures."""

    model_name: str
    run_id: str
    version: str
    metrics: dict[str, float]
    windows: Windows
    rows: dict[str, int]
    features: tuple[str, ...]
    unavailable: tuple[str, ...]
    params: dict[str, object] = field(default_factory=dict)


def train_model(
    *,
    model_name: str,
    table: pd.DataFrame,
    windows: Windows,
    truth: pd.DataFrame | None = None,
    source: str = "twin",
    history_source: str = "",
    calibration: str = "isotonic",
    on_round: Callable[[int, float], None] | None = None,
) -> TrainReport:
    """Train one model on a feature table and log and register it (bad input fails before any run starts)."""
    plan = split(table=table, model=model_name, windows=windows)
    return fit_and_log(
        plan=plan,
        truth=truth,
        source=source,
        history_source=history_source,
        calibration=calibration,
        on_round=on_round,
        engine="local",
    )


def fit_and_log(
    *,
    plan: Split,
    truth: pd.DataFrame | None,
    source: str,
    history_source: str,
    calibration: str,
    engine: str,
    on_round: Callable[[int, float], None] | None = None,
    booster: lgb.Booster | None = None,
    categories: dict[str, list[str]] | None = None,
    train_rows: int | None = None,
    train_rate: float | None = None,
) -> TrainReport:
    """Fit (or adopt a booster fitted elsewhere), evaluate, and log one MLflow run that registers a version."""
    model_name = plan.model
    run_name = f"{model_name}-{source}-test-{plan.windows.test_start:%Y%m%d}"
    with tracked_run(model_name=model_name, run_name=run_name) as run:
        risk_model = RiskModel(
            model_name=model_name, features=plan.features, categorical=plan.categorical, calibration=calibration
        )
        rows = {
            "train": int(train_rows if train_rows is not None else len(plan.train)),
            "valid": len(plan.valid),
            "test": len(plan.test),
        }
        mlflow.log_params(
            {
                "model": model_name,
                "source": source,
                "history": history_source,
                "engine": engine,
                "calibration": calibration,
                **plan.windows.as_params(),
                **{f"rows_{k}": v for k, v in rows.items()},
                "features": len(plan.features),
                "unavailable_features": ",".join(plan.unavailable) or "-",
                **{f"lgb_{k}": v for k, v in risk_model.params.items()},
            }
        )
        risk_model.fit(train=plan.train, valid=plan.valid, on_round=on_round, booster=booster, categories=categories)
        base_rate = float(train_rate if train_rate is not None else plan.train["label"].mean())
        forecast = risk_model.risk_frame(plan.test)
        metrics, curves = evaluate_all(
            model_name=model_name, test=plan.test, forecast=forecast, base_rate=base_rate, truth=truth
        )
        valid_scores = evaluate(y=plan.valid["label"].to_numpy(), p=risk_model.risk_frame(plan.valid))
        metrics.update({f"valid_{k}": v for k, v in valid_scores.items() if k in ("auc", "logloss", "ece")})
        metrics["best_iteration"] = float(risk_model.best_iteration_)
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        _log_datasets(plan=plan, source=source, history_source=history_source)
        _log_artifacts(plan=plan, risk_model=risk_model, curves=curves)
        model_uri = log_model(model=risk_model, example=plan.test)
        version = register(model_name=model_name, model_uri=model_uri, run_id=run.info.run_id)
        mlflow.set_tag("registered_version", version)
    return TrainReport(
        model_name=model_name,
        run_id=run.info.run_id,
        version=version,
        metrics=metrics,
        windows=plan.windows,
        rows=rows,
        features=plan.features,
        unavailable=plan.unavailable,
        params=dict(risk_model.params),
    )


def _log_datasets(*, plan: Split, source: str, history_source: str) -> None:
    """The train, validation and test windows as MLflow datasets (a sample stands in for a big window)."""
    windows = plan.windows
    spans = {
        "training": (plan.train, f"..{windows.valid_start:%Y-%m-%d}"),
        "validation": (plan.valid, f"{windows.valid_start:%Y-%m-%d}..{windows.test_start:%Y-%m-%d}"),
        "testing": (plan.test, f"{windows.test_start:%Y-%m-%d}..{windows.test_end:%Y-%m-%d}"),
    }
    for context, (frame, span) in spans.items():
        if frame.empty:
            continue
        sample = frame.sample(n=min(len(frame), 50_000), random_state=0) if len(frame) > 50_000 else frame
        columns = ["allocated_at", *plan.features, "label"]
        with warnings.catch_warnings():
            # MLflow cannot tell which of its two local-file source types a path is; either is right.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            dataset = mlflow.data.from_pandas(
                sample[columns].reset_index(drop=True),
                source=history_source or source,
                targets="label",
                name=f"{plan.model}-{context}-{span}",
            )
        mlflow.log_input(
            dataset,
            context=context,
            tags={"window": span, "rows": str(len(frame)), "sampled": str(len(sample) < len(frame))},
        )


def _log_artifacts(*, plan: Split, risk_model: RiskModel, curves: dict) -> None:
    """Feature list, calibration and importance plots, and the test table that `models compare` re-scores."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "features.json").write_text(
            json.dumps(
                {
                    "features": list(plan.features),
                    "categorical": list(plan.categorical),
                    "unavailable": list(plan.unavailable),
                },
                indent=1,
            )
        )
        (root / "calibration_curves.json").write_text(json.dumps(curves, indent=1))
        calibration_plot(
            curves=curves, title=f"{plan.model}: calibration on the test window", path=root / "calibration.png"
        )
        importance_plot(
            importance=risk_model.feature_importance(),
            title=f"{plan.model}: feature importance",
            path=root / "feature_importance.png",
        )
        test_table = root / Path(TEST_TABLE_ARTIFACT).name
        plan.test.to_parquet(test_table, index=False)
        mlflow.log_artifact(str(root / "features.json"))
        mlflow.log_artifact(str(root / "calibration_curves.json"), artifact_path="evaluation")
        mlflow.log_artifact(str(root / "calibration.png"), artifact_path="evaluation")
        mlflow.log_artifact(str(root / "feature_importance.png"), artifact_path="evaluation")
        mlflow.log_artifact(str(test_table), artifact_path=str(Path(TEST_TABLE_ARTIFACT).parent))
