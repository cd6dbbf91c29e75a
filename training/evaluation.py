"""Evaluation on the test window, always beside the yardsticks: base rate, historical-rate baseline, oracle."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from training.metrics import calibration_curve, evaluate  # noqa: E402

# What a rules-only engine would use: the lane's / node's own past rate, then coarser ones.
BASELINE_FEATURES = {
    "carrier_delay": ("lane_late_rate_28d", "region_late_rate_28d", "carrier_late_rate_28d"),
    "node_congestion": ("node_late_rate_28d", "node_type_late_rate_7d"),
}
TRUTH_COLUMNS = {
    "carrier_delay": ("p_decision_carrier_delay", "p_true_carrier_delay"),
    "node_congestion": ("p_decision_late_handover", "p_true_late_handover"),
}


def historical_rate(*, model_name: str, table, base_rate: float) -> np.ndarray:
    """The historical-rate baseline forecast: the finest past rate known, else the base rate.

    `table` is a feature table or a mapping of feature arrays (the service's online features).
    """
    n = len(table) if isinstance(table, pd.DataFrame) else len(next(iter(table.values())))
    forecast = np.full(n, np.nan)
    for column in BASELINE_FEATURES[model_name]:
        if column in table:
            values = np.asarray(table[column], dtype=np.float64)
            forecast = np.where(np.isnan(forecast), values, forecast)
    return np.where(np.isnan(forecast), base_rate, forecast)


def evaluate_all(
    *,
    model_name: str,
    test: pd.DataFrame,
    forecast: np.ndarray,
    base_rate: float,
    truth: pd.DataFrame | None,
) -> tuple[dict[str, float], dict[str, list[dict]]]:
    """Metrics of the model and each yardstick on the same test rows, and their calibration curves."""
    y = test["label"].to_numpy(dtype=np.float64)
    metrics: dict[str, float] = {"base_rate": base_rate}
    curves: dict[str, list[dict]] = {}
    yardsticks = {
        "test": forecast,
        "base": np.full(len(test), base_rate),
        "baseline": historical_rate(model_name=model_name, table=test, base_rate=base_rate),
    }
    if truth is not None:
        decision, clairvoyant = TRUTH_COLUMNS[model_name]
        joined = truth.reindex(test["shipment_id"].to_numpy())
        yardsticks["oracle"] = joined[decision].to_numpy(dtype=np.float64)
        yardsticks["true"] = joined[clairvoyant].to_numpy(dtype=np.float64)
    for name, p in yardsticks.items():
        known = ~np.isnan(p)
        scores = evaluate(y=y[known], p=p[known])
        metrics.update({f"{name}_{k}": v for k, v in scores.items() if k not in ("rate", "mean_p", "n")})
        metrics[f"{name}_mean_p"] = scores["mean_p"]
        curves[name] = calibration_curve(y=y[known], p=np.clip(p[known], 0, 1))
    metrics["test_rate"] = float(y.mean())
    metrics["test_rows"] = float(len(y))
    if "oracle_logloss" in metrics:
        metrics["logloss_vs_oracle"] = metrics["test_logloss"] / metrics["oracle_logloss"]
        metrics["auc_gap_oracle"] = metrics["oracle_auc"] - metrics["test_auc"]
    metrics["beats_baseline"] = float(metrics["test_logloss"] < metrics["baseline_logloss"])
    return metrics, curves


def calibration_plot(*, curves: dict[str, list[dict]], title: str, path: Path) -> None:
    """Forecast against observed rate, for the model and its yardsticks."""
    figure, axis = plt.subplots(figsize=(5.5, 5))
    top = 0.0
    for name, curve in curves.items():
        xs, ys = [r["mean_p"] for r in curve], [r["observed"] for r in curve]
        axis.plot(xs, ys, marker="o", label="model" if name == "test" else name)
        top = max(top, *xs, *ys)
    axis.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1)
    axis.set_xlabel("forecast P(late), bin mean")
    axis.set_ylabel("observed late rate")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def importance_plot(*, importance: dict[str, float], title: str, path: Path, top: int = 20) -> None:
    """Total gain of the most important features."""
    ranked = sorted(importance.items(), key=lambda kv: kv[1])[-top:]
    figure, axis = plt.subplots(figsize=(6, 0.3 * len(ranked) + 1.2))
    axis.barh([k for k, _ in ranked], [v for _, v in ranked])
    axis.set_xlabel("total gain")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
