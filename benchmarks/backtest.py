"""Benchmark: a 100,000-order backtest of two rulesets on the embedded default history, timed part by part.

Replays the newest 100,000 recorded first decisions of the `make run` history (made first if
missing) through the seed ruleset and the seed plus a lane penalty on its busiest lane, priced by
the registered champions (and, side by side, by rules-only priors). Prints the time of each part,
orders replayed per second, and what the second ruleset changed. Ends with one JSON line.

    .venv/bin/python benchmarks/backtest.py [--orders 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
# Run as a script, this file's folder comes first on sys.path and its name would hide the packages.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from features.history import load_history
from rules.backtest import compare, load_replay, prior_risk, replay_ruleset
from rules.schema import load_ruleset, parse_ruleset, seed_ruleset_path
from serving.runtime import load_models
from serving.scorer import replay_risk
from training.tracking import alias_version, configure

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--orders", type=int, default=100_000)
    args = parser.parse_args()
    os.chdir(ROOT)
    folder = args.data_dir / "history" / "default"
    configure(tracking_uri=None)
    if not folder.exists() or not all(
        alias_version(model_name=m, alias="champion") for m in ("carrier_delay", "node_congestion")
    ):
        print("no embedded default yet: running `riskroute run --no-serve` first", flush=True)
        command = [
            str(Path(sys.executable).parent / "riskroute"),
            "run",
            "--no-serve",
            "--data-dir",
            str(args.data_dir),
        ]
        subprocess.run(command, check=True)

    seed = load_ruleset(path=seed_ruleset_path())
    started = time.perf_counter()
    replay = load_replay(folder=folder, max_orders=args.orders)
    load_s = time.perf_counter() - started

    clock = time.perf_counter()
    history, _ = load_history(path=folder)
    models, _ = load_models(tracking_uri=None)
    history_s = time.perf_counter() - clock
    clock = time.perf_counter()
    risk = replay_risk(replay=replay, history=history, models=models)
    risk_s = time.perf_counter() - clock

    clock = time.perf_counter()
    old = replay_ruleset(replay=replay, ruleset=seed, risk=risk)
    busiest = old.shipments.groupby(["carrier", "dest_region"]).size().idxmax()
    document = seed.model_dump(mode="json")
    document["name"] = "seed-with-lane-penalty"
    document["scoring"]["lane_adjustments"] = [
        {"id": "bench-penalty", "carrier": busiest[0], "dest_regions": [busiest[1]], "amount": 3.0}
    ]
    candidate = parse_ruleset(document=document, origin="benchmark")
    new = replay_ruleset(replay=replay, ruleset=candidate, risk=risk)
    report = compare(replay=replay, old=old, new=new)
    decide_s = time.perf_counter() - clock

    clock = time.perf_counter()
    priors = prior_risk(replay=replay)
    compare(
        replay=replay,
        old=replay_ruleset(replay=replay, ruleset=seed, risk=priors),
        new=replay_ruleset(replay=replay, ruleset=candidate, risk=priors),
    )
    priors_decide_s = time.perf_counter() - clock

    backtest_s = load_s + risk_s + decide_s
    figures = {
        "orders": replay.batch.n_orders,
        "candidates": len(replay.batch.cand_order),
        "options": len(replay.batch.opt_cand),
        "load_s": round(load_s, 2),
        "history_and_models_s": round(history_s, 2),
        "risk_models_s": round(risk_s, 2),
        "decide_two_rulesets_s": round(decide_s, 2),
        "backtest_s": round(backtest_s, 2),
        "backtest_priors_s": round(load_s + priors_decide_s, 2),
        "orders_per_s": round(replay.batch.n_orders / backtest_s, 1),
        "lane_penalised": f"{busiest[0]}->{busiest[1]}",
        "changed_share": report["changed_share"],
        "expected_on_time_old": report["old"]["expected_on_time"],
        "expected_on_time_new": report["new"]["expected_on_time"],
        "cost_per_order_old": report["old"]["cost_per_order"],
        "cost_per_order_new": report["new"]["cost_per_order"],
    }
    print(f"{figures['orders']:,} orders, {figures['candidates']:,} candidates, {figures['options']:,} options")
    print(f"  load the recorded decisions        {load_s:7.2f} s")
    print(f"  price every option (both models)   {risk_s:7.2f} s   (history and models loaded in {history_s:.2f} s)")
    print(f"  decide under two rulesets, compare {decide_s:7.2f} s")
    print(
        f"  backtest total                     {backtest_s:7.2f} s   "
        f"({figures['orders_per_s']:,.0f} orders/s; target <= 30 s)"
    )
    print(f"  the same with rules-only priors    {figures['backtest_priors_s']:7.2f} s")
    print(
        f"lane penalty on {figures['lane_penalised']}: {report['changed_share']:.2%} of decisions change; "
        f"expected on-time "
        f"{figures['expected_on_time_old']:.4f} -> {figures['expected_on_time_new']:.4f}, cost per order "
        f"{figures['cost_per_order_old']:.3f} -> {figures['cost_per_order_new']:.3f}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
