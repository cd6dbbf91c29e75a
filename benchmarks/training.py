"""Benchmark: features and training of both risk models on the default twin, beside their yardsticks.

Simulates the default scenario (or reuses --history), builds point-in-time features, trains both
models with the default time split, and prints for each model the test figures of the model, the
training base rate, the historical-rate baseline and the oracle (the twin's decision-time
probabilities), with the ratios model/oracle and model/baseline. `--dask` also trains from the
Parquet partitions on a 2-worker local Dask cluster and prints dask/local ratios. Ends with one
line of JSON holding every figure. MLflow runs go to a temporary store unless --tracking-uri.

    .venv/bin/python benchmarks/training.py [--history DIR] [--dask]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the training package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from features.history import load_history
from features.offline import build_features, build_features_chunked
from features.twin.output import read_manifest, read_truth, write_simulation
from features.twin.scenario import load_scenario
from features.twin.simulate import simulate
from training.datasets import default_windows
from training.runner import TrainRequest, run_training
from training.tracking import configure
from training.train import train_model

MODELS = ("carrier_delay", "node_congestion")


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=Path, default=None, help="a twin history folder to reuse")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--dask", action="store_true", help="also train with the Dask engine and compare")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="riskroute-train-bench-"))
    configure(tracking_uri=args.tracking_uri or f"sqlite:///{scratch / 'mlflow.db'}")
    folder = args.history or scratch / "history"
    if read_manifest(folder=folder) is None:
        scenario = load_scenario(source="default")
        write_simulation(result=simulate(scenario=scenario), scenario=scenario, seed=scenario.seed, out_dir=folder)
    history, _ = load_history(path=folder)
    truth = read_truth(folder=folder).set_index("shipment_id")

    started = time.perf_counter()
    tables = build_features(history=history)
    features_s = time.perf_counter() - started
    figures: dict[str, object] = {"shipments": len(history.shipments), "features_s": round(features_s, 2)}
    fit_total = 0.0
    print(f"{len(history.shipments):,} shipments; features for both models in {features_s:.1f}s")
    for name in MODELS:
        table = tables[name]
        fit_started = time.perf_counter()
        report = train_model(model_name=name, table=table, windows=default_windows(table=table), truth=truth)
        fit_s = time.perf_counter() - fit_started
        fit_total += fit_s
        m = report.metrics
        rows = report.rows["train"] + report.rows["valid"]
        print(
            f"\n{name}: trained on {report.rows['train']:,} + validated on {report.rows['valid']:,} rows in "
            f"{fit_s:.1f}s ({rows / fit_s:,.0f} rows/s, incl. evaluation and MLflow logging)"
        )
        print(f"  {'forecast':28s} {'AUC':>7s} {'log loss':>9s} {'Brier':>7s} {'ECE':>7s} {'lift':>6s}")
        for key, label in (
            ("test", "model"),
            ("base", "base rate (train)"),
            ("baseline", "historical rate"),
            ("oracle", "oracle (decision time)"),
            ("true", "clairvoyant p_true"),
        ):
            print(
                f"  {label:28s} {m[f'{key}_auc']:7.4f} {m[f'{key}_logloss']:9.4f} {m[f'{key}_brier']:7.4f} "
                f"{m[f'{key}_ece']:7.4f} {m[f'{key}_lift_top_decile']:6.2f}"
            )
        print(
            f"  log loss model/oracle {m['logloss_vs_oracle']:.3f}   model/baseline "
            f"{m['test_logloss'] / m['baseline_logloss']:.3f}   AUC oracle-model {m['auc_gap_oracle']:+.4f}"
        )
        figures.update(
            {
                f"{name}_auc": round(m["test_auc"], 4),
                f"{name}_logloss": round(m["test_logloss"], 4),
                f"{name}_ece": round(m["test_ece"], 4),
                f"{name}_brier": round(m["test_brier"], 4),
                f"{name}_oracle_auc": round(m["oracle_auc"], 4),
                f"{name}_oracle_logloss": round(m["oracle_logloss"], 4),
                f"{name}_baseline_auc": round(m["baseline_auc"], 4),
                f"{name}_baseline_logloss": round(m["baseline_logloss"], 4),
                f"{name}_base_rate": round(m["base_rate"], 4),
                f"{name}_logloss_over_oracle": round(m["logloss_vs_oracle"], 4),
                f"{name}_auc_gap_oracle": round(m["auc_gap_oracle"], 4),
                f"{name}_fit_s": round(fit_s, 2),
                f"{name}_train_rows": report.rows["train"],
            }
        )
    figures["train_s"] = round(features_s + fit_total, 2)
    print(f"\nfeatures + training of both models: {figures['train_s']:.1f}s")
    if args.dask:
        partitions = scratch / "features"
        build_features_chunked(history=history, out_dir=partitions, chunk_days=7)
        for name in MODELS:
            dask_started = time.perf_counter()
            report = run_training(
                request=TrainRequest(models=(name,), engine="dask", scheduler="local", features_dir=partitions),
                history=None,
                truth_folder=folder,
            )[0]
            dask_s = time.perf_counter() - dask_started
            ratio = report.metrics["test_logloss"] / figures[f"{name}_logloss"]
            print(
                f"{name} on Dask (2 local workers): {dask_s:.1f}s, AUC {report.metrics['test_auc']:.4f}, "
                f"log loss dask/local {ratio:.3f}"
            )
            figures[f"{name}_dask_s"] = round(dask_s, 2)
            figures[f"{name}_dask_auc"] = round(report.metrics["test_auc"], 4)
            figures[f"{name}_dask_logloss_over_local"] = round(ratio, 4)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
