"""Time-based splits of a feature table, with the checks that keep training honest.

train: rows decided before valid_start whose outcome was known before it;
valid: rows decided in [valid_start, test_start - embargo), outcome known before test_start;
test:  rows decided in [test_start, test_end) whose outcome is known (evaluation only).

No window learns from the future. The embargo is the outcome latency (99th percentile of
known_at - decided_at): without it, rows decided just before the test would enter validation only
if their outcome came quickly, and quick outcomes are mostly on-time ones, so the calibration,
fitted on validation, would lean toward on time. Training keeps its last days (the booster is
barely moved by that slight lean, and recent history is the most valuable).
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
DEFAULT_VALID_DAYS = 7
LATENCY_QUANTILE = 0.99


@dataclass(frozen=True)
class Windows:
    """The three time windows (validation start, test start, test end; test end exclusive)."""

    valid_start: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    embargo: pd.Timedelta = pd.Timedelta(0)

    @property
    def valid_end(self) -> pd.Timestamp:
        """Rows decided from here on are too close to test_start to validate on."""
        return self.test_start - self.embargo

    def as_params(self) -> dict[str, str]:
        """The windows as strings for logging."""
        return {
            "valid_start": str(self.valid_start),
            "test_start": str(self.test_start),
            "test_end": str(self.test_end),
            "embargo_days": str(self.embargo.days),
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
    return windows_after(
        last_labelled=labelled["allocated_at"].max(),
        last_known=labelled["label_known_at"].max(),
        latency_days=latency_days(
            counts=latency_whole_days(
                known_at=labelled["label_known_at"], decided_at=labelled["allocated_at"]
            ).value_counts()
        ),
        valid_start=valid_start,
        test_start=test_start,
        test_end=test_end,
    )


def latency_whole_days(*, known_at: pd.Series, decided_at: pd.Series) -> pd.Series:
    """Days from decision to known outcome, rounded up (works on pandas and Dask series alike)."""
    seconds = (known_at - decided_at).dt.total_seconds().dropna()
    return (seconds // 86_400 + (seconds % 86_400 > 0)).astype("int64")


def latency_days(*, counts: pd.Series) -> int:
    """The outcome latency in whole days: the LATENCY_QUANTILE of the latency distribution (exact)."""
    counts = counts.sort_index()
    if counts.sum() == 0:
        return 1
    cumulative = counts.cumsum() / counts.sum()
    return max(1, int(cumulative.index[np.searchsorted(cumulative.to_numpy(), LATENCY_QUANTILE)]))


def windows_after(
    *,
    last_labelled: pd.Timestamp,
    last_known: pd.Timestamp,
    latency_days: int,
    valid_start: pd.Timestamp | None = None,
    test_start: pd.Timestamp | None = None,
    test_end: pd.Timestamp | None = None,
) -> Windows:
    """Windows ending with the last day that has a known outcome, unless given; the embargo is the latency.

    The validation window keeps at least as many usable days as the embargo removes, so long
    latencies (a marketplace promising weeks ahead) still leave enough outcomes to calibrate on.
    """
    embargo = pd.Timedelta(days=latency_days)
    last = pd.Timestamp(last_labelled).normalize() + pd.Timedelta(days=1)
    # Rows decided within one latency of the history's end may still have open outcomes, and the
    # ones already known are the quick (mostly on-time) ones: the default test stops before them.
    complete_until = (pd.Timestamp(last_known) - embargo).normalize() + pd.Timedelta(days=1)
    test_end = pd.Timestamp(test_end) if test_end is not None else min(last, complete_until)
    test_start = pd.Timestamp(test_start) if test_start is not None else test_end - pd.Timedelta(days=DEFAULT_TEST_DAYS)
    if valid_start is None:
        valid_start = test_start - max(pd.Timedelta(days=DEFAULT_VALID_DAYS), embargo) - embargo
    return Windows(valid_start=pd.Timestamp(valid_start), test_start=test_start, test_end=test_end, embargo=embargo)


def check_windows(*, windows: Windows, first: pd.Timestamp, last: pd.Timestamp) -> None:
    """Refuse windows that are out of order or fall outside the data."""
    if not windows.valid_start < windows.test_start < windows.test_end:
        raise TrainingError(
            f"windows must satisfy valid_start < test_start < test_end; got {windows.valid_start}, "
            f"{windows.test_start}, {windows.test_end}"
        )
    if windows.valid_end <= windows.valid_start:
        raise TrainingError(
            f"the validation window ({windows.valid_start} to {windows.test_start}) is no longer than the outcome "
            f"latency ({windows.embargo.days} days): start it earlier"
        )
    if windows.valid_start <= first or windows.test_start > last:
        raise TrainingError(
            f"the windows fall outside the data: the history runs from {first} to {last}, "
            f"but validation starts {windows.valid_start} and the test starts {windows.test_start}"
        )


def check_window_rows(*, model: str, name: str, rows: int, positives: float) -> None:
    """Refuse a window with too few known outcomes, or with one class only."""
    minimum = MIN_TRAIN_ROWS if name == "train" else MIN_EVAL_ROWS
    if rows < minimum:
        raise TrainingError(
            f"{model}: too few rows with known outcomes in the {name} window: {rows:,} "
            f"(at least {minimum:,} needed); widen the window or bring more history"
        )
    if positives == 0 or positives == rows:
        only = "on time" if positives == 0 else "late"
        raise TrainingError(f"{model}: the {name} window holds one class only (every outcome {only})")


def window_masks(*, allocated, known, windows: Windows) -> tuple:
    """Train, validation and test masks over labelled rows (pandas and Dask series alike)."""
    train = (allocated < windows.valid_start) & (known < windows.valid_start)
    valid = (allocated >= windows.valid_start) & (allocated < windows.valid_end) & (known < windows.test_start)
    test = (allocated >= windows.test_start) & (allocated < windows.test_end)
    return train, valid, test


def split(*, table: pd.DataFrame, model: str, windows: Windows) -> Split:
    """Cut a model's feature table into train / validation / test windows, refusing what cannot train."""
    check_windows(windows=windows, first=table["allocated_at"].min(), last=table["allocated_at"].max())
    allocated, known = table["allocated_at"], table["label_known_at"]
    labelled = table["label"].notna()
    if not labelled.any():
        raise TrainingError(f"{model}: the history has no known outcomes yet: every label is still open")
    in_train, in_valid, in_test = window_masks(allocated=allocated, known=known, windows=windows)
    train, valid, test = table[labelled & in_train], table[labelled & in_valid], table[labelled & in_test]
    for name, frame in (("train", train), ("validation", valid), ("test", test)):
        check_window_rows(model=model, name=name, rows=len(frame), positives=float(frame["label"].sum()))
    unavailable = tuple(f for f in MODEL_FEATURES[model] if _empty(table[f]))
    used, categorical = usable_features(
        model=model, unavailable=unavailable, empty_in_train=[f for f in MODEL_FEATURES[model] if _empty(train[f])]
    )
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


def usable_features(
    *, model: str, unavailable: tuple[str, ...], empty_in_train: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The features and categoricals a model trains on.

    A feature the history never provides is left out; one it provides but that is empty throughout
    the training window is an error (the window probably starts before the data that feeds it).
    """
    empty = [f for f in empty_in_train if f not in unavailable]
    if empty:
        raise TrainingError(
            f"{model}: feature(s) empty throughout the training window: {', '.join(empty)}; "
            "the window may start before the data that feeds them"
        )
    used = tuple(f for f in MODEL_FEATURES[model] if f not in unavailable)
    return used, tuple(c for c in MODEL_CATEGORICAL[model] if c in used)


def _empty(column: pd.Series) -> bool:
    """Whether a column holds no usable value (all missing, or text that says so)."""
    if column.dtype == object or pd.api.types.is_string_dtype(column):
        values = column.dropna().astype("str")
        return bool(values.isin(["", "nan", "None"]).all())
    return bool(np.all(pd.isna(column.to_numpy())))
