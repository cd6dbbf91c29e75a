"""Training requests as the command line and schedulers make them: which models, from which history, how."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.history import History
from features.offline import build_features
from training.datasets import default_windows
from training.errors import TrainingError
from training.tracking import configure
from training.train import TrainReport, train_model


@dataclass(frozen=True)
class TrainRequest:
    """Everything a training run needs to know besides the history itself."""

    models: tuple[str, ...]
    source: str = "twin"
    history_source: str = ""
    valid_start: str | None = None
    test_start: str | None = None
    test_end: str | None = None
    calibration: str = "isotonic"
    engine: str = "local"
    scheduler: str | None = None
    features_dir: Path | None = None
    tracking_uri: str | None = None


def _day(value: str | None, option: str) -> pd.Timestamp | None:
    """A window boundary from the command line; a clear error when it is not a date."""
    if value is None:
        return None
    try:
        return pd.Timestamp(value)
    except ValueError:
        raise TrainingError(f"{option}: {value!r} is not a date (use YYYY-MM-DD)") from None


def run_training(
    *,
    request: TrainRequest,
    history: History | None,
    truth_folder: Path | None = None,
    on_round: Callable[[str, int, float], None] | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
) -> list[TrainReport]:
    """Train each requested model and return one report per model (from `tables` when already built)."""
    configure(tracking_uri=request.tracking_uri)
    boundaries = {
        "valid_start": _day(request.valid_start, "--valid-start"),
        "test_start": _day(request.test_start, "--test-start"),
        "test_end": _day(request.test_end, "--test-end"),
    }
    if request.engine == "dask":
        from training.distributed import train_distributed

        if request.features_dir is None:
            raise TrainingError("--engine dask needs the Parquet feature partitions (--features-dir)")
        return [
            train_distributed(
                model_name=name,
                features_dir=request.features_dir,
                scheduler=request.scheduler or "local",
                boundaries=boundaries,
                source=request.source,
                history_source=request.history_source,
                calibration=request.calibration,
            )
            for name in request.models
        ]
    if history is None:
        raise TrainingError("no history to train on")
    truth = _truth(folder=truth_folder)
    tables = build_features(history=history)
    reports = []
    for name in request.models:
        table = tables[name]
        windows = default_windows(table=table, **boundaries)
        reports.append(
            train_model(
                model_name=name,
                table=table,
                windows=windows,
                truth=truth,
                source=request.source,
                history_source=request.history_source,
                calibration=request.calibration,
                on_round=(lambda r, loss, n=name: on_round(n, r, loss)) if on_round else None,
            )
        )
    return reports


def _truth(*, folder: Path | None) -> pd.DataFrame | None:
    """The twin's per-shipment probabilities by shipment_id, when the history is a twin run."""
    if folder is None:
        return None
    from features.twin.output import TRUTH_FOLDER, read_truth

    if not (folder / TRUTH_FOLDER).exists():
        return None
    return read_truth(folder=folder).set_index("shipment_id")
