"""Benchmark: simulate the default network, validate it, build its features, and hold it against real data.

Prints shipments simulated per second, feature rows built per second (in memory and chunk by chunk,
side by side), the stylized facts of the twin beside those of the real Olist history when it is
present, and ends with one line of JSON holding every figure.

    .venv/bin/python benchmarks/history.py [--scenario default] [--seed 7] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from features.history import load_history, stylized_facts
from features.offline import build_features, build_features_chunked
from features.twin.output import write_simulation
from features.twin.scenario import load_scenario
from features.twin.simulate import simulate

OLIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "olist"


def _timed(action):
    """Run an action; return its result and the wall seconds it took."""
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="where to write the history (default: a temp dir)")
    args = parser.parse_args()

    scenario = load_scenario(source=args.scenario)
    seed = scenario.seed if args.seed is None else args.seed
    out = args.out or Path(tempfile.mkdtemp(prefix="riskroute-bench-")) / "history"

    run, simulate_s = _timed(lambda: simulate(scenario=scenario, seed=seed))
    _, write_s = _timed(lambda: write_simulation(result=run, scenario=scenario, seed=seed, out_dir=out))
    shipments = run.stats["shipments"]
    run = None  # free the run's frames before the feature build
    (history, _), validate_s = _timed(lambda: load_history(path=out))
    tables, features_s = _timed(lambda: build_features(history=history))
    feature_rows = sum(len(t) for t in tables.values())
    del tables
    _, chunked_s = _timed(
        lambda: build_features_chunked(history=history, out_dir=out.parent / "features", chunk_days=7)
    )
    twin = stylized_facts(shipments=history.shipments)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"scenario {scenario.name!r} seed {seed}: {shipments:,} shipments over {scenario.days} days")
    print(f"simulate        {simulate_s:7.1f} s  ({shipments / simulate_s:,.0f} shipments/s)")
    print(f"write parquet   {write_s:7.1f} s")
    print(f"load+validate   {validate_s:7.1f} s  ({shipments / validate_s:,.0f} rows/s)")
    print(f"features        {features_s:7.1f} s  ({feature_rows / features_s:,.0f} feature rows/s, both models)")
    print(f"features chunked{chunked_s:7.1f} s  (7-day chunks; chunked/in-memory = {chunked_s / features_s:.2f}x)")
    print(f"peak memory     {peak_rss_mb:7.0f} MB")

    figures = {
        "scenario": scenario.name,
        "seed": seed,
        "shipments": shipments,
        "simulate_s": round(simulate_s, 2),
        "write_s": round(write_s, 2),
        "validate_s": round(validate_s, 2),
        "features_s": round(features_s, 2),
        "features_chunked_s": round(chunked_s, 2),
        "chunked_over_in_memory": round(chunked_s / features_s, 3),
        "shipments_per_s": round(shipments / simulate_s),
        "feature_rows_per_s": round(feature_rows / features_s),
        "peak_rss_mb": round(peak_rss_mb),
        "carrier_delay_rate": round(twin["carrier_delay_rate"], 4),
        "late_handover_rate": round(twin["late_handover_rate"], 4),
        "twin_facts": {k: round(v, 4) for k, v in twin.items()},
    }
    if (OLIST / "olist_orders_dataset.csv").exists():
        from features.olist import load_olist

        real = stylized_facts(shipments=load_olist(folder=OLIST)[0].shipments)
        figures["olist_facts"] = {k: round(v, 4) for k, v in real.items()}
        print(f"\n{'stylized fact':30s} {'twin':>9s} {'olist':>9s} {'twin/olist':>10s}")
        for name, value in twin.items():
            ratio = value / real[name] if real[name] else float("nan")
            print(f"{name:30s} {value:9.3f} {real[name]:9.3f} {ratio:10.2f}")
    else:
        print(f"\n(real Olist history not found at {OLIST}: twin facts only)")
        for name, value in twin.items():
            print(f"{name:30s} {value:9.3f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
