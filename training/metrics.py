"""Quality of probability forecasts: discrimination, proper scores, calibration and lift."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

EPSILON = 1e-6
CALIBRATION_BINS = 10


def clip(p: np.ndarray) -> np.ndarray:
    """Probabilities kept off 0 and 1 so that log loss stays finite."""
    return np.clip(np.asarray(p, dtype=np.float64), EPSILON, 1 - EPSILON)


def calibration_curve(*, y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Mean forecast against observed rate in equal-mass bins of the forecast."""
    order = np.argsort(p, kind="stable")
    rows = []
    for chunk in np.array_split(order, bins):
        if chunk.size:
            rows.append({"mean_p": float(p[chunk].mean()), "observed": float(y[chunk].mean()), "n": int(chunk.size)})
    return rows


def expected_calibration_error(*, y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Weighted mean gap between forecast and outcome over equal-mass bins (adaptive ECE)."""
    curve = calibration_curve(y=y, p=p, bins=bins)
    total = sum(row["n"] for row in curve)
    return float(sum(row["n"] * abs(row["mean_p"] - row["observed"]) for row in curve) / total)


def top_decile_lift(*, y: np.ndarray, p: np.ndarray) -> float:
    """Outcome rate among the riskiest 10% divided by the overall rate."""
    cut = max(1, int(round(0.1 * len(p))))
    riskiest = np.argsort(-p, kind="stable")[:cut]
    base = y.mean()
    return float(y[riskiest].mean() / base) if base > 0 else float("nan")


def evaluate(*, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, log loss, Brier score, ECE and top-decile lift of forecasts p for outcomes y."""
    y = np.asarray(y, dtype=np.float64)
    p = clip(p)
    both_classes = 0 < y.sum() < len(y)
    return {
        "auc": float(roc_auc_score(y, p)) if both_classes else float("nan"),
        "logloss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y=y, p=p),
        "lift_top_decile": top_decile_lift(y=y, p=p),
        "mean_p": float(p.mean()),
        "rate": float(y.mean()),
        "n": int(len(y)),
    }
