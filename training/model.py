"""A calibrated LightGBM risk model: fit on a time split, predict on plain arrays.

`RiskModel` is scikit-learn shaped (`fit`, `predict_proba`, learned state ending in `_`). Its
categories are mapped to fixed integer codes learned at fit time and saved with the model, so the
same string always reaches the booster as the same code; an unseen value becomes missing.
Prediction takes a float matrix in `features_` order (see `encode`) and needs no pandas.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from pathlib import Path
from typing import Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from training.errors import ModelLoadError

BOOSTER_FILE = "booster.txt"
META_FILE = "model.json"
FORMAT_VERSION = 1
LARGE_BATCH = 5_000  # rows from which categorical columns are encoded by pandas rather than a dict
DEFAULT_PARAMS: dict[str, object] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 500,
    # Sampling half the features per tree keeps the model from leaning on a few regime-specific ones.
    "feature_fraction": 0.5,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_cat_to_onehot": 8,
    "cat_smooth": 20.0,
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}
MAX_ROUNDS = 2_000
EARLY_STOPPING_ROUNDS = 50


class CompiledPredictor(Protocol):
    """A forest's predictions without the booster (see `training.compiled`)."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Uncalibrated probabilities for the rows of X."""
        ...


@dataclass
class Calibrator:
    """Maps raw booster probabilities to calibrated ones (isotonic steps or a Platt sigmoid)."""

    method: str = "isotonic"
    x_: list[float] = field(default_factory=list)
    y_: list[float] = field(default_factory=list)
    a_: float = 1.0
    b_: float = 0.0
    # The isotonic steps as arrays, made once (np.interp would convert the lists on every live request).
    _steps: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._steps = (np.asarray(self.x_, dtype=np.float64), np.asarray(self.y_, dtype=np.float64))

    def fit(self, *, raw: np.ndarray, y: np.ndarray) -> Calibrator:
        """Learn the mapping on validation forecasts and outcomes."""
        if self.method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(raw, y)
            self.x_ = [float(v) for v in iso.X_thresholds_]
            self.y_ = [float(v) for v in iso.y_thresholds_]
            self.__post_init__()
        elif self.method == "platt":
            logit = np.log(np.clip(raw, 1e-9, 1 - 1e-9) / np.clip(1 - raw, 1e-9, 1)).reshape(-1, 1)
            platt = LogisticRegression(C=1e6).fit(logit, y)
            self.a_, self.b_ = float(platt.coef_[0, 0]), float(platt.intercept_[0])
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        return self

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw ones."""
        if self.method == "isotonic":
            return np.interp(raw, *self._steps)
        logit = np.log(np.clip(raw, 1e-9, 1 - 1e-9) / np.clip(1 - raw, 1e-9, 1))
        return 1.0 / (1.0 + np.exp(-(self.a_ * logit + self.b_)))


def learn_categories(*, frame: pd.DataFrame, categorical: tuple[str, ...]) -> dict[str, list[str]]:
    """The sorted values of each categorical column: their positions become the fixed codes."""
    return {
        name: sorted(v for v in frame[name].dropna().astype("str").unique() if v not in ("nan", "None", ""))
        for name in categorical
    }


class RiskModel:
    """Gradient-boosted risk model with fixed category codes and a calibrator."""

    def __init__(
        self,
        *,
        model_name: str,
        features: tuple[str, ...],
        categorical: tuple[str, ...],
        params: Mapping[str, object] | None = None,
        calibration: str = "isotonic",
    ):
        self.model_name = model_name
        self.features = tuple(features)
        self.categorical = tuple(categorical)
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        self.calibration = calibration
        self.num_threads_ = 0  # 0 = LightGBM's default; a model loaded for serving scores on one thread
        # The forest compiled to native code (`training.compiled`), once the service has compiled it.
        self.compiled_: CompiledPredictor | None = None

    # ----- encoding -------------------------------------------------------------------------
    @cached_property
    def _layout(self) -> tuple[list[str], np.ndarray, list[tuple[int, str]]]:
        """Numeric feature names and their matrix columns; (column, name) of each categorical feature."""
        numeric = [(j, name) for j, name in enumerate(self.features_) if name not in self.codes_]
        categorical = [(j, name) for j, name in enumerate(self.features_) if name in self.codes_]
        return [name for _, name in numeric], np.array([j for j, _ in numeric], dtype=np.intp), categorical

    def encode(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Feature columns (arrays by name) as the float matrix the booster reads; no pandas."""
        n = len(next(iter(columns.values())))
        numeric, at, categorical = self._layout
        matrix = np.empty((n, len(self.features_)), dtype=np.float64)
        if n > LARGE_BATCH:
            for name, j in zip(numeric, at):  # column by column: no second copy of a large batch
                matrix[:, j] = np.asarray(columns[name], dtype=np.float64)
        else:
            # Every numeric column in one stack: a live request's many short columns cost more one at a time.
            matrix[:, at] = np.array([columns[name] for name in numeric], dtype=np.float64).T
        for j, name in categorical:
            values = columns[name]
            if n > LARGE_BATCH:
                # Many rows (a backtest): pandas maps them in one pass; unknown values become missing.
                codes = pd.Categorical(np.asarray(values, dtype=object), categories=self.categories_[name]).codes
                matrix[:, j] = np.where(codes >= 0, codes, np.nan)
            else:
                # Only category strings are keys: None, NaN and unseen values all read as missing.
                matrix[:, j] = list(map(self.codes_[name].get, values, repeat(np.nan, n)))
        return matrix

    def encode_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """A feature table as the booster's float matrix (for training and evaluation)."""
        matrix = np.empty((len(frame), len(self.features_)), dtype=np.float64)
        for j, name in enumerate(self.features_):
            column = frame[name]
            if name in self.codes_:
                codes = pd.Categorical(column.astype("str"), categories=self.categories_[name]).codes
                matrix[:, j] = np.where(codes >= 0, codes, np.nan)
            else:
                matrix[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        return matrix

    # ----- fit / predict --------------------------------------------------------------------
    def fit(
        self,
        *,
        train: pd.DataFrame,
        valid: pd.DataFrame,
        on_round: Callable[[int, float], None] | None = None,
        booster: lgb.Booster | None = None,
        categories: dict[str, list[str]] | None = None,
    ) -> RiskModel:
        """Fit the booster with early stopping on validation, then the calibrator on validation.

        A booster trained elsewhere (the Dask engine) can be adopted with the categories it was trained on.
        """
        self.features_ = self.features
        self.categories_ = (
            categories if categories is not None else learn_categories(frame=train, categorical=self.categorical)
        )
        self.codes_ = {name: {v: i for i, v in enumerate(values)} for name, values in self.categories_.items()}
        self.__dict__.pop("_layout", None)  # the encoding layout follows the features just set
        y_valid = valid["label"].to_numpy(dtype=np.float64)
        x_valid = self.encode_frame(valid)
        if booster is None:
            booster = self._train_booster(train=train, x_valid=x_valid, y_valid=y_valid, on_round=on_round)
        self.booster_ = booster
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        raw_valid = self.booster_.predict(x_valid, num_iteration=self.best_iteration_)
        self.calibrator_ = Calibrator(method=self.calibration).fit(raw=raw_valid, y=y_valid)
        return self

    def _train_booster(
        self,
        *,
        train: pd.DataFrame,
        x_valid: np.ndarray,
        y_valid: np.ndarray,
        on_round: Callable[[int, float], None] | None,
    ) -> lgb.Booster:
        """LightGBM with native categoricals and early stopping on validation log loss."""
        categorical_index = [self.features_.index(c) for c in self.categorical]
        train_set = lgb.Dataset(
            self.encode_frame(train),
            label=train["label"].to_numpy(dtype=np.float64),
            feature_name=list(self.features_),
            categorical_feature=categorical_index,
            free_raw_data=True,
        )
        valid_set = lgb.Dataset(x_valid, label=y_valid, reference=train_set)
        callbacks = [lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)]
        if on_round is not None:

            def report(env: lgb.callback.CallbackEnv) -> None:
                on_round(env.iteration + 1, float(env.evaluation_result_list[0][2]))

            callbacks.append(report)
        return lgb.train(
            {**self.params, "metric": "binary_logloss"},
            train_set,
            num_boost_round=MAX_ROUNDS,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=callbacks,
        )

    def predict_raw(self, X: np.ndarray, *, num_threads: int | None = None) -> np.ndarray:
        """Uncalibrated booster probabilities (`num_threads` overrides the model's, e.g. 0 = all cores for a batch).

        A compiled forest, when there is one, answers the model's own calls (a live request's few rows).
        """
        if num_threads is None and self.compiled_ is not None:
            return self.compiled_.predict(X)
        threads = self.num_threads_ if num_threads is None else num_threads
        return self.booster_.predict(X, num_iteration=self.best_iteration_, num_threads=threads)

    def risk(self, X: np.ndarray, *, num_threads: int | None = None) -> np.ndarray:
        """Calibrated P(late) for each row of the encoded matrix X."""
        return np.clip(self.calibrator_.transform(self.predict_raw(X, num_threads=num_threads)), 0.0, 1.0)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """scikit-learn style: column 0 P(on time), column 1 P(late)."""
        late = self.risk(X)
        return np.column_stack([1.0 - late, late])

    def risk_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated P(late) for a feature table (evaluation convenience)."""
        return self.risk(self.encode_frame(frame))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """LightGBM's own per-feature contributions (log-odds) per row; the last column is the bias."""
        return self.booster_.predict(X, num_iteration=self.best_iteration_, pred_contrib=True)

    def feature_importance(self) -> dict[str, float]:
        """Total gain per feature."""
        gains = self.booster_.feature_importance(importance_type="gain")
        return {name: float(g) for name, g in zip(self.features_, gains)}

    # ----- persistence ----------------------------------------------------------------------
    def save(self, *, folder: Path) -> None:
        """Write the booster and everything needed to use it."""
        folder.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(folder / BOOSTER_FILE), num_iteration=self.best_iteration_)
        meta = {
            "format_version": FORMAT_VERSION,
            "model_name": self.model_name,
            "features": list(self.features_),
            "categorical": list(self.categorical),
            "categories": self.categories_,
            "params": self.params,
            "best_iteration": self.best_iteration_,
            "calibrator": {
                "method": self.calibrator_.method,
                "x": self.calibrator_.x_,
                "y": self.calibrator_.y_,
                "a": self.calibrator_.a_,
                "b": self.calibrator_.b_,
            },
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, *, folder: Path, expected_features: tuple[str, ...] | None = None, num_threads: int = 1) -> RiskModel:
        """Read a saved model and check, once, that its parts fit together and fit this code."""
        meta_path, booster_path = folder / META_FILE, folder / BOOSTER_FILE
        if not meta_path.exists() or not booster_path.exists():
            raise ModelLoadError(f"{folder}: not a riskroute model (expected {META_FILE} and {BOOSTER_FILE})")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelLoadError(f"{folder}: model format {meta.get('format_version')} is not {FORMAT_VERSION}")
        model = cls(
            model_name=meta["model_name"],
            features=tuple(meta["features"]),
            categorical=tuple(meta["categorical"]),
            params=meta["params"],
            calibration=meta["calibrator"]["method"],
        )
        model.features_ = model.features
        model.categories_ = meta["categories"]
        model.codes_ = {name: {v: i for i, v in enumerate(values)} for name, values in model.categories_.items()}
        model.booster_ = lgb.Booster(model_file=str(booster_path))
        model.best_iteration_ = model.booster_.current_iteration()
        model.num_threads_ = num_threads
        c = meta["calibrator"]
        model.calibrator_ = Calibrator(method=c["method"], x_=c["x"], y_=c["y"], a_=c["a"], b_=c["b"])
        model._check(expected_features=expected_features, folder=folder)
        return model

    def _check(self, *, expected_features: tuple[str, ...] | None, folder: Path) -> None:
        """Refuse a model whose booster, feature list, categories or calibrator disagree."""
        if self.booster_.num_feature() != len(self.features_):
            raise ModelLoadError(
                f"{folder}: booster has {self.booster_.num_feature()} features, metadata lists {len(self.features_)}"
            )
        if list(self.booster_.feature_name()) != list(self.features_):
            raise ModelLoadError(f"{folder}: booster feature order differs from the saved feature list")
        if expected_features is not None:
            unknown = [f for f in self.features_ if f not in expected_features]
            if unknown:
                raise ModelLoadError(f"{folder}: model uses feature(s) this code does not define: {', '.join(unknown)}")
        missing = [c for c in self.categorical if c not in self.categories_]
        if missing:
            raise ModelLoadError(f"{folder}: no category mapping for {', '.join(missing)}")
        if self.calibrator_.method == "isotonic" and np.any(np.diff(self.calibrator_.y_) < 0):
            raise ModelLoadError(f"{folder}: isotonic calibrator is not monotone")
