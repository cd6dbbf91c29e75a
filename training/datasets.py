"""Time-based splits of a feature table, with the checks that keep training honest.

train: rows decided before the validation start whose outcome was known before it;
valid: rows decided in [valid_start, test_start) whose outcome was known before test_start;
test:  rows decided in [test_start, test_end) whose outcome is known (evaluation only).
A row whose outcome was still open at a boundary is left out of the window before it, so no
window learns from the future.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.definitions import MODEL_CATEGORICAL, MODEL_FEATURES
from training.errors import TrainingError

MIN_TRAIN_ROWS = 1_000
MIN_EVAL_ROWS = 200
DEFAULT_TEST_DAYS = 21
DEFAULT_VALID_DAYS = 14


@dataclass(frozen=True)
class Windows:
    """The three time windows (validation start, test start, test end; test end exclusive)."""

    valid_start: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def as_params(self) -> dict[str, str]:
        """The windows as strings for logging."""
        return {
            "valid_start": str(self.valid_start),
            "test_start": str(self.test_start),
            "test_end": str(self.test_end),
        }


@dataclass(frozen=True)
class Split:
    """Train, validation and test frames of one model, with the features the model will use."""

    model: str
    features: tuple[str, ...]
    categorical: tuple[str, ...]
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    windows: Windows
    unavailable: tuple[str, ...]


def default_windows(
    *,
    table: pd.DataFrame,
    valid_start: pd.Timestamp | None = None,
    test_start: pd.Timestamp | None = None,
    test_end: pd.Timestamp | None = None,
) -> Windows:
    """Windows from the given boundaries, the rest defaulting to the last 3 weeks as test and 2 before as validation."""
    labelled = table.dropna(subset=["label"])
    if labelled.empty:
        raise TrainingError("the history has no known outcomes yet: every label is still open")
    last = labelled["allocated_at"].max().normalize() + pd.Timedelta(days=1)
    test_end = pd.Timestamp(test_end) if test_end is not None else last
    test_start = pd.Timestamp(test_start) if test_start is not None else test_end - pd.Timedelta(days=DEFAULT_TEST_DAYS)
    valid_start = (
        pd.Timestamp(valid_start) if valid_start is not None else test_start - pd.Timedelta(days=DEFAULT_VALID_DAYS)
    )
    return Windows(valid_start=valid_start, test_start=test_start, test_end=test_end)


def split(*, table: pd.DataFrame, model: str, windows: Windows) -> Split:
    """Cut a model's feature table into train / validation / test windows, refusing what cannot train."""
    if not windows.valid_start < windows.test_start < windows.test_end:
        raise TrainingError(
            f"windows must satisfy valid_start < test_start < test_end; got {windows.valid_start}, "
            f"{windows.test_start}, {windows.test_end}"
        )
    first, last = table["allocated_at"].min(), table["allocated_at"].max()
    if windows.valid_start <= first or windows.test_start > last:
        raise TrainingError(
            f"the windows fall outside the data: the history runs from {first} to {last}, "
            f"but validation starts {windows.valid_start} and the test starts {windows.test_start}"
        )
    allocated, known = table["allocated_at"], table["label_known_at"]
    labelled = table["label"].notna()
    if not labelled.any():
        raise TrainingError(f"{model}: the history has no known outcomes yet: every label is still open")
    train = table[labelled & (allocated < windows.valid_start) & (known < windows.valid_start)]
    valid = table[
        labelled & (allocated >= windows.valid_start) & (allocated < windows.test_start) & (known < windows.test_start)
    ]
    test = table[labelled & (allocated >= windows.test_start) & (allocated < windows.test_end)]
    for name, frame, minimum in (
        ("train", train, MIN_TRAIN_ROWS),
        ("validation", valid, MIN_EVAL_ROWS),
        ("test", test, MIN_EVAL_ROWS),
    ):
        if len(frame) < minimum:
            raise TrainingError(
                f"{model}: too few rows with known outcomes in the {name} window: {len(frame):,} "
                f"(at least {minimum:,} needed); widen the window or bring more history"
            )
        classes = frame["label"].nunique()
        if classes < 2:
            only = "late" if frame["label"].iloc[0] == 1 else "on time"
            raise TrainingError(f"{model}: the {name} window holds one class only (every outcome {only})")
    features = MODEL_FEATURES[model]
    # A feature the source never provides is dropped; one that exists but is empty in training is an error.
    unavailable = tuple(f for f in features if _empty(table[f]))
    empty_in_train = [f for f in features if f not in unavailable and _empty(train[f])]
    if empty_in_train:
        raise TrainingError(
            f"{model}: feature(s) empty throughout the training window: {', '.join(empty_in_train)}; "
            "the window may start before the data that feeds them"
        )
    used = tuple(f for f in features if f not in unavailable)
    categorical = tuple(c for c in MODEL_CATEGORICAL[model] if c in used)
    return Split(
        model=model,
        features=used,
        categorical=categorical,
        train=train.reset_index(drop=True),
        valid=valid.reset_index(drop=True),
        test=test.reset_index(drop=True),
        windows=windows,
        unavailable=unavailable,
    )


def _empty(column: pd.Series) -> bool:
    """Whether a column holds no usable value (all missing, or text that says so)."""
    if column.dtype == object or pd.api.types.is_string_dtype(column):
        values = column.dropna().astype("str")
        return bool(values.isin(["", "nan", "None"]).all())
    return bool(np.all(pd.isna(column.to_numpy())))
