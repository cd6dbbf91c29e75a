"""One pass of the proposer: findings from the champions on recent history, each filed with its backtest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from approvals import rulesets
from approvals.db import Database
from approvals.policy import Policy
from features.history import History
from features.offline import prepare
from serving.proposing.capacity import capacity_changes, capacity_findings
from serving.proposing.filing import file_changes
from serving.proposing.lanes import lane_changes, lane_findings
from serving.proposing.promotions import promotion_backtest, propose_promotions
from serving.proposing.weights import weight_changes
from serving.settings import Proposer


class NoChampion(Exception):
    """Neither model has a champion: there is nothing to propose from."""


@dataclass(frozen=True)
class ProposerRun:
    """What one pass of the proposer found and filed."""

    since: pd.Timestamp
    lanes: int
    nodes: int
    filed: list[dict]


def propose_all(
    *,
    database: Database,
    folder: Path,
    tracking_uri: str | None,
    policy: Policy,
    proposer: Proposer,
    history: History | None = None,
) -> ProposerRun:
    """One pass of the proposer over a twin history: lanes, capacity caps, late penalties and promotions, filed.

    Findings are judged on the last `proposer.days` of history; every change is backtested on the
    newest `proposer.backtest_orders` recorded decisions; late penalties are tuned against
    `proposer.late_cost` (by default the penalties in force). Pending proposals are kept, not repeated.
    """
    from features.history import load_history
    from features.offline import build_features
    from rules.backtest import load_replay, recorded_truth
    from serving.runtime import MODEL_NAMES, MlflowChampions, load_models
    from serving.scorer import replay_risk

    loaded = history if history is not None else load_history(path=folder)[0]
    models, problems = load_models(tracking_uri=tracking_uri)
    if models.carrier_delay is None and models.node_congestion is None:
        raise NoChampion(f"no champion to propose from: {problems}")
    end = loaded.shipments["allocated_at"].max()
    since = end.floor("D") - pd.Timedelta(days=proposer.days)
    window = (str(since), str(end))
    # The streams of the history feed the findings and the backtests' pricing: built once.
    prepared = prepare(history=loaded)
    with database.sessions() as session:
        ruleset = rulesets.to_ruleset(version=rulesets.active(session=session))
    lanes, nodes = [], []
    if models.carrier_delay is not None:
        services = pd.read_parquet(folder / "services.parquet")
        lanes = lane_findings(
            history=loaded, services=services, model=models.carrier_delay, since=since, prepared=prepared
        )
    if models.node_congestion is not None:
        table = build_features(history=loaded, start=since.to_datetime64(), prepared=prepared)["node_congestion"]
        nodes = capacity_findings(
            table=table, model=models.node_congestion, ruleset=ruleset, since=since, max_cut=policy.max_capacity_change
        )
    replay = load_replay(folder=folder, max_orders=proposer.backtest_orders)
    risk = replay_risk(replay=replay, history=loaded, models=models, prepared=prepared)
    truth = recorded_truth(folder=folder)
    filed = propose_promotions(
        database=database,
        policy=policy,
        champions=MlflowChampions(tracking_uri=tracking_uri),
        model_names=MODEL_NAMES,
        backtest=promotion_backtest(
            replay=replay, history=loaded, models=models, risk=risk, ruleset=ruleset, prepared=prepared, truth=truth
        ),
    )
    changes = []
    if lanes:
        changes.append(lane_changes(findings=lanes, policy=policy, model=models.carrier_delay, window=window))
    if nodes:
        changes.append(capacity_changes(findings=nodes, policy=policy, model=models.node_congestion, window=window))
    changes.append(
        weight_changes(replay=replay, risk=risk, policy=policy, window=window, values=dict(proposer.late_cost))
    )
    filed += file_changes(database=database, changes=changes, replay=replay, risk=risk, policy=policy, truth=truth)
    return ProposerRun(since=since, lanes=len(lanes), nodes=len(nodes), filed=filed)
