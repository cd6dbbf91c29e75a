"""Champion against challenger (or any runs), re-scored on the same test window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from training.errors import ModelLoadError, TrainingError
from training.evaluation import historical_rate
from training.metrics import evaluate
from training.tracking import CHALLENGER, CHAMPION, MODEL_ARTIFACT, alias_version, load_from_uri, test_table

COMPARED_METRICS = ("auc", "logloss", "brier", "ece", "lift_top_decile")


@dataclass(frozen=True)
class Contender:
    """One model in a comparison and its scores on the shared window."""

    label: str
    run_id: str
    scores: dict[str, float]


@dataclass(frozen=True)
class Comparison:
    """Contenders scored on the same rows, the window they share, and the deltas to the first."""

    model_name: str
    window_run_id: str
    rows: int
    contenders: list[Contender]
    baseline: dict[str, float]

    def deltas(self) -> list[dict[str, float]]:
        """Each contender's metrics minus the first contender's."""
        first = self.contenders[0].scores
        return [{k: c.scores[k] - first[k] for k in COMPARED_METRICS} for c in self.contenders]


def compare(*, model_name: str, runs: list[str] | None = None) -> Comparison:
    """Score the champion and challenger (or the given runs) on the newest contender's test window."""
    client = MlflowClient()
    if runs:
        contenders = [(f"run {run_id[:8]}", run_id, f"runs:/{run_id}/{MODEL_ARTIFACT}") for run_id in runs]
    else:
        champion = alias_version(model_name=model_name, alias=CHAMPION)
        challenger = alias_version(model_name=model_name, alias=CHALLENGER)
        if champion is None:
            raise ModelLoadError(f"{model_name} has no champion yet; train it first (riskroute train)")
        contenders = []
        for alias, version in ((CHAMPION, champion), (CHALLENGER, challenger)):
            if version is None:
                continue
            run_id = client.get_model_version(model_name, version).run_id
            contenders.append((f"{alias} v{version}", run_id, f"models:/{model_name}/{version}"))
    if len(contenders) < 2 and not runs:
        raise TrainingError(f"{model_name}: champion and challenger are the same version; nothing to compare")
    try:
        started = {run_id: client.get_run(run_id).info.start_time for _, run_id, _ in contenders}
    except MlflowException as exc:
        raise TrainingError(f"unknown run: {exc.message}") from None
    window_run = max(started, key=started.get)
    shared_start = client.get_run(window_run).data.params.get("test_start")
    for label, run_id, _ in contenders:
        own_start = client.get_run(run_id).data.params.get("test_start")
        # A window that starts before a model's own test window overlaps what it was fitted on.
        if shared_start and own_start and pd.Timestamp(shared_start) < pd.Timestamp(own_start):
            raise TrainingError(
                f"{label} was fitted on data up to {own_start}; the shared test window starts {shared_start}, "
                "inside it, so that model would be scored on data it learned from"
            )
    table = test_table(run_id=window_run)
    y = table["label"].to_numpy(dtype=np.float64)
    scored = []
    for label, run_id, uri in contenders:
        model = load_from_uri(uri=uri, model_name=model_name)
        missing = [f for f in model.features_ if f not in table.columns]
        if missing:
            raise TrainingError(f"{label} needs feature(s) the shared test window lacks: {', '.join(missing)}")
        scored.append(Contender(label=label, run_id=run_id, scores=evaluate(y=y, p=model.risk_frame(table))))
    base_rate = float(client.get_run(window_run).data.metrics.get("base_rate", y.mean()))
    baseline = evaluate(y=y, p=historical_rate(model_name=model_name, table=table, base_rate=base_rate))
    return Comparison(
        model_name=model_name, window_run_id=window_run, rows=len(table), contenders=scored, baseline=baseline
    )
