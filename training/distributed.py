"""Training beyond one machine: LightGBM's own Dask estimator over the Parquet feature partitions.

The training window stays distributed; the validation and test windows (a few weeks) are brought
to the driver for early-stopping selection, calibration and evaluation. The result is the same
`RiskModel` format and the same MLflow run as the local engine.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from features.definitions import MODEL_FEATURES
from training.datasets import (
    Split,
    check_window_rows,
    check_windows,
    latency_days,
    latency_whole_days,
    usable_features,
    window_masks,
    windows_after,
)
from training.errors import TrainingError
from training.model import DEFAULT_PARAMS, MAX_ROUNDS
from training.train import TrainReport, fit_and_log

DASK_ROUNDS = 600


def best_round(*, booster, x_valid: np.ndarray, y_valid: np.ndarray) -> int:
    """The boosting round with the lowest validation log loss (one tree per step, so it stays cheap)."""
    raw = np.zeros(len(y_valid))
    losses = []
    for round_ in range(booster.current_iteration()):
        raw += booster.predict(x_valid, start_iteration=round_, num_iteration=1, raw_score=True)
        p = np.clip(1.0 / (1.0 + np.exp(-raw)), 1e-12, 1 - 1e-12)
        losses.append(-np.mean(y_valid * np.log(p) + (1 - y_valid) * np.log(1 - p)))
    return int(np.argmin(losses)) + 1


@contextmanager
def dask_client(*, scheduler: str):
    """A client for a scheduler address, or a 2-worker local cluster for 'local'."""
    from dask.distributed import Client, LocalCluster

    if scheduler == "local":
        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster:
            with Client(cluster) as client:
                yield client
        return
    try:
        client = Client(scheduler, timeout="10s")
    except OSError as exc:
        raise TrainingError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    with client:
        yield client


def _encode_partition(
    frame: pd.DataFrame, *, features: tuple[str, ...], categories: dict[str, list[str]], with_label: bool = False
) -> pd.DataFrame:
    """One partition as the booster's float columns, with the fixed category codes (and the label last)."""
    out = pd.DataFrame(index=frame.index)
    for name in features:
        if name in categories:
            codes = pd.Categorical(frame[name].astype("str"), categories=categories[name]).codes
            out[name] = np.where(codes >= 0, codes, np.nan)
        else:
            out[name] = frame[name].astype("float64")
    if with_label:
        out["label"] = frame["label"].astype("float64")
    return out


def train_distributed(
    *,
    model_name: str,
    features_dir: Path,
    scheduler: str,
    boundaries: dict[str, pd.Timestamp | None],
    source: str,
    history_source: str,
    calibration: str,
    truth: pd.DataFrame | None = None,
) -> TrainReport:
    """Fit one model with lightgbm.dask on a cluster and log it like a local run."""
    import dask.dataframe as dd
    from lightgbm.dask import DaskLGBMClassifier

    folder = features_dir / model_name
    if not list(folder.glob("part-*.parquet")):
        raise TrainingError(f"{folder}: no feature partitions; run `riskroute features build` first")
    with dask_client(scheduler=scheduler) as client:
        table = dd.read_parquet(str(folder))
        labelled = table[~table["label"].isna()]
        latency = latency_whole_days(known_at=labelled["label_known_at"], decided_at=labelled["allocated_at"])
        first, last, last_labelled, last_known, latency_counts = dd.compute(
            table["allocated_at"].min(),
            table["allocated_at"].max(),
            labelled["allocated_at"].max(),
            labelled["label_known_at"].max(),
            latency.value_counts(),
        )
        if pd.isna(last_labelled):
            raise TrainingError(f"{model_name}: the history has no known outcomes yet: every label is still open")
        windows = windows_after(
            last_labelled=last_labelled,
            last_known=last_known,
            latency_days=latency_days(counts=latency_counts),
            **boundaries,
        )
        check_windows(windows=windows, first=first, last=last)
        allocated, known = labelled["allocated_at"], labelled["label_known_at"]
        train_mask, valid_mask, test_mask = window_masks(allocated=allocated, known=known, windows=windows)
        train = labelled[train_mask]
        valid, test = dd.compute(labelled[valid_mask], labelled[test_mask])
        train_rows, train_positives = dd.compute(train["label"].count(), train["label"].sum())
        for name, rows, positives in (
            ("train", int(train_rows), float(train_positives)),
            ("validation", len(valid), float(valid["label"].sum())),
            ("test", len(test), float(test["label"].sum())),
        ):
            check_window_rows(model=model_name, name=name, rows=rows, positives=positives)
        features = MODEL_FEATURES[model_name]
        present_everywhere, present_in_train = dd.compute(table[list(features)].count(), train[list(features)].count())
        unavailable = tuple(f for f in features if present_everywhere[f] == 0)
        used, categorical = usable_features(
            model=model_name, unavailable=unavailable, empty_in_train=[f for f in features if present_in_train[f] == 0]
        )
        values = dd.compute(*[train[c].dropna().astype("str").unique() for c in categorical])
        categories = {
            c: sorted(v for v in found if v not in ("nan", "None", "")) for c, found in zip(categorical, values)
        }
        # Features and label travel in one array, so their chunks line up on every worker.
        encoded = train.map_partitions(_encode_partition, features=used, categories=categories, with_label=True)
        matrix = encoded.to_dask_array(lengths=True)
        # Time filters leave empty partitions; even chunks spread the rows over every worker.
        workers = max(1, len(client.scheduler_info()["workers"]))
        chunk = max(2, int(np.ceil(int(train_rows) / (2 * workers))))
        matrix = client.persist(matrix.rechunk({0: chunk, 1: -1}))
        x_train, y_train = matrix[:, :-1], matrix[:, -1]
        x_valid = _encode_partition(valid, features=used, categories=categories).to_numpy()
        params = {k: v for k, v in DEFAULT_PARAMS.items() if k not in ("objective", "seed", "verbosity")}
        # Row bagging samples each worker's own rows, so the model would depend on where the scheduler
        # put the chunks; without it, data-parallel boosting sums the same histograms wherever rows live.
        params.update(bagging_fraction=1.0, bagging_freq=0)
        estimator = DaskLGBMClassifier(
            client=client,
            n_estimators=min(DASK_ROUNDS, MAX_ROUNDS),
            random_state=int(DEFAULT_PARAMS["seed"]),
            verbosity=-1,
            **params,
        )
        estimator.fit(
            x_train,
            y_train,
            categorical_feature=[used.index(c) for c in categorical],
            feature_name=list(used),
        )
        booster = estimator.booster_
    # Early stopping, decided after the fact on the driver: the round with the best validation log loss.
    booster.best_iteration = best_round(booster=booster, x_valid=x_valid, y_valid=valid["label"].to_numpy())
    plan = Split(
        model=model_name,
        features=used,
        categorical=categorical,
        train=pd.DataFrame(),
        valid=valid.reset_index(drop=True),
        test=test.reset_index(drop=True),
        windows=windows,
        unavailable=unavailable,
    )
    return fit_and_log(
        plan=plan,
        truth=truth,
        source=source,
        history_source=history_source,
        calibration=calibration,
        engine=f"dask:{scheduler}",
        booster=booster,
        categories=categories,
        train_rows=int(train_rows),
        train_rate=float(train_positives) / int(train_rows),
    )
