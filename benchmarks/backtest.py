"""Benchmark: a 100,000-order backtest timed part by part, and the closed loop on the trouble scenario.

Replays the newest 100,000 recorded first decisions of the `make run` history (made first if
missing) through the seed ruleset and the seed plus a lane penalty on its busiest lane, priced by
the registered champions (and, side by side, by rules-only priors). Prints the time of each part,
orders replayed per second, and what the second ruleset changed.

The closed loop (`--loop`, on by default): simulate the trouble scenario, build features, train both
models, look at the network as it stood on day 49 (two weeks after the lane trouble began), let
`propose` file lane and capacity proposals (with backtests) into a fresh approvals database, approve
them as ops leads (two for a capacity cut), and run the twin forward again from day 0, same seed:
the seed ruleset throughout, and the seed ruleset until day 49 with the approved one from then on.
Both runs price risk with the champion models on features of the run's own history (point in time);
a third run routes with the seed ruleset on rules-only priors, no model. The twin's truth says what
each really did after day 49. Ends with one JSON line.

    .venv/bin/python benchmarks/backtest.py [--orders 100000] [--no-loop]
"""

from __future__ import annotations

import argparse
import dataclasses
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
    parser.add_argument("--loop", action=argparse.BooleanOptionalAction, default=True, help="run the closed loop")
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
        "backtest_expected_on_time_old": report["old"]["expected_on_time"],
        "backtest_expected_on_time_new": report["new"]["expected_on_time"],
        "backtest_cost_per_order_old": report["old"]["cost_per_order"],
        "backtest_cost_per_order_new": report["new"]["cost_per_order"],
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
        f"{figures['backtest_expected_on_time_old']:.4f} -> {figures['backtest_expected_on_time_new']:.4f}, "
        f"cost per order {figures['backtest_cost_per_order_old']:.3f} -> {figures['backtest_cost_per_order_new']:.3f}"
    )
    if args.loop:
        figures.update(closed_loop())
    print(json.dumps(figures))


def closed_loop() -> dict:
    """Trouble scenario: propose from the models, approve, and run the twin forward under old and new rulesets."""
    import tempfile

    import pandas as pd

    from approvals import proposals, rulesets
    from approvals.db import open_database, transaction, upgrade
    from approvals.policy import Policy
    from approvals.tokens import Principal
    from features.offline import build_features, prepare
    from features.twin.output import write_simulation
    from features.twin.scenario import load_scenario
    from features.twin.simulate import simulate
    from rules.twin import RulesetPolicy
    from serving.proposing.capacity import capacity_changes, capacity_findings
    from serving.proposing.filing import file_changes
    from serving.proposing.lanes import lane_changes, lane_findings
    from serving.scorer import ModelSet
    from serving.twin_risk import TwinModelRisk
    from training.datasets import default_windows
    from training.tracking import load_registered
    from training.train import train_model

    scratch = Path(tempfile.mkdtemp(prefix="riskroute-loop-"))
    scenario = load_scenario(source="trouble")
    clock = time.perf_counter()
    folder = scratch / "history"
    write_simulation(result=simulate(scenario=scenario), scenario=scenario, seed=scenario.seed, out_dir=folder)
    history, _ = load_history(path=folder)
    tables = build_features(history=history)
    configure(tracking_uri=f"sqlite:///{scratch / 'mlflow.db'}")
    for name in ("carrier_delay", "node_congestion"):
        train_model(model_name=name, table=tables[name], windows=default_windows(table=tables[name]))
    model = load_registered(model_name="carrier_delay", alias="champion")
    congestion = load_registered(model_name="node_congestion", alias="champion")
    # The loop looks at the network as it stood two weeks after the lane trouble began.
    now = pd.Timestamp(scenario.start_date) + pd.Timedelta(days=49)
    seen = history.shipments[history.shipments["allocated_at"] < now].reset_index(drop=True)
    known = dataclasses.replace(history, shipments=seen)
    since = now - pd.Timedelta(days=14)
    prepared = prepare(history=known)
    findings = lane_findings(
        history=known,
        services=pd.read_parquet(folder / "services.parquet"),
        model=model,
        since=since,
        prepared=prepared,
    )
    seed = load_ruleset(path=seed_ruleset_path())
    recent = build_features(history=known, start=since.to_datetime64(), prepared=prepared)["node_congestion"]
    node_findings = capacity_findings(table=recent, model=congestion, ruleset=seed, since=since)
    url = f"sqlite:///{scratch / 'riskroute.db'}"
    upgrade(url=url)
    database = open_database(url=url)
    with transaction(sessions=database.sessions) as session:
        rulesets.ensure_seeded(session=session, ruleset=seed)
    replay = load_replay(folder=folder, end=now, max_orders=20_000)
    models = ModelSet(carrier_delay=model, node_congestion=congestion)
    risk = replay_risk(replay=replay, history=known, models=models, prepared=prepared)
    window = (str(since), str(now))
    changes = [
        lane_changes(findings=findings, policy=Policy(), model=model, window=window),
        capacity_changes(findings=node_findings, policy=Policy(), model=congestion, window=window),
    ]
    filed = file_changes(database=database, changes=changes, replay=replay, risk=risk, policy=Policy())
    leads = [Principal(name=f"ops-lead-{i}", role="ops_lead") for i in (1, 2)]
    for item in filed:
        if "proposal" not in item:
            continue
        # Each approval makes a new version, so the next proposal is rebased on it first, as an ops lead would.
        with transaction(sessions=database.sessions) as session:
            proposals.sweep(session=session)
        with transaction(sessions=database.sessions) as session:
            if proposals.get(session=session, proposal_id=item["proposal"]).status == "stale":
                proposals.rebase(session=session, proposal_id=item["proposal"], actor=leads[0], policy=Policy())
        # A capacity cut needs two ops leads; the second approval of anything else finds it applied and stops.
        for lead in leads:
            with transaction(sessions=database.sessions) as session:
                if proposals.get(session=session, proposal_id=item["proposal"]).status != "pending":
                    break
                proposals.approve(
                    session=session, proposal_id=item["proposal"], actor=lead, reason="benchmark", policy=Policy()
                )
    with database.sessions() as session:
        approved = rulesets.to_ruleset(version=rulesets.active(session=session))
    database.dispose()
    loop_s = time.perf_counter() - clock

    def forward(*, before, after, priced: bool) -> tuple[float, float]:
        """Run the twin with `before` routing until the approval and `after` from then on; true figures after it."""
        # The scenario announces the same disruptions in every run: the models hear of each when it is announced.
        risk = TwinModelRisk(models=models, notices=history.notices) if priced else None
        policy = SwitchAt(
            at=int(now.timestamp()),
            before=RulesetPolicy(ruleset=before, risk=risk),
            after=RulesetPolicy(ruleset=after, risk=risk),
        )
        result = simulate(scenario=scenario, policy=policy)
        shipments = result.shipments.merge(result.truth, on="shipment_id")
        later = shipments["allocated_at"] >= now
        on_time = (1 - shipments["p_true_carrier_delay"]) * (1 - shipments["p_true_late_handover"])
        orders = shipments.loc[later, "order_id"].nunique()
        return float(on_time[later].mean()), float(shipments.loc[later, "cost"].sum() / orders)

    clock = time.perf_counter()
    old_on_time, old_cost = forward(before=seed, after=seed, priced=True)
    new_on_time, new_cost = forward(before=seed, after=approved, priced=True)
    priced_s = time.perf_counter() - clock
    clock = time.perf_counter()
    rules_on_time, rules_cost = forward(before=seed, after=seed, priced=False)
    rules_s = time.perf_counter() - clock
    targets = [f.target for f in findings] + [f.target for f in node_findings]
    approved_count = sum("proposal" in f for f in filed)
    print(f"closed loop on the trouble scenario (as of day 49): findings {targets}; {approved_count} approved")
    print("  the twin run forward from day 0, the approved ruleset taking over on day 49; true figures after day 49:")
    print(f"  true on-time:   old ruleset {old_on_time:.4f}, approved {new_on_time:.4f} (models price risk)")
    print(
        f"  cost per order: old ruleset {old_cost:.3f}, approved {new_cost:.3f} "
        f"({new_cost / old_cost - 1:+.2%}; target within 2%)"
    )
    print(
        f"  seed ruleset with rules-only priors (no model): true on-time {rules_on_time:.4f}, "
        f"cost per order {rules_cost:.3f}"
    )
    print(f"  loop {loop_s:.1f} s; two model-priced twin runs {priced_s:.1f} s; one rules-only run {rules_s:.1f} s")
    return {
        "loop_findings": targets,
        "loop_risk_in_twin": "champion models on the run's own point-in-time features",
        "true_on_time_old": round(old_on_time, 5),
        "true_on_time_new": round(new_on_time, 5),
        "cost_per_order_old": round(old_cost, 4),
        "cost_per_order_new": round(new_cost, 4),
        "true_on_time_rules_only": round(rules_on_time, 5),
        "cost_per_order_rules_only": round(rules_cost, 4),
        "loop_s": round(loop_s, 1),
        "twin_priced_s": round(priced_s, 1),
        "twin_rules_only_s": round(rules_s, 1),
    }


class SwitchAt:
    """One ruleset's routing until a moment, another's from then on (what approving at that moment means)."""

    def __init__(self, *, at: int, before, after) -> None:
        self.at, self.before, self.after = at, before, after

    def observe(self, shipments) -> None:
        """Both policies share one risk source: it hears each day once."""
        self.before.observe(shipments)

    def __call__(self, batch):
        return (self.before if int(batch.decision_time.min()) < self.at else self.after)(batch)


if __name__ == "__main__":
    main()
