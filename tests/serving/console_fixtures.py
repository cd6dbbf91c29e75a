"""A service with a database holding real proposals: lane penalties backtested by the real engine on a small twin."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from approvals import proposals, rulesets
from approvals.db import Database, transaction
from approvals.policy import Policy
from features.online import OnlineFeatureState
from rules.backtest import compare, load_replay, prior_risk, recorded_truth, replay_ruleset
from rules.schema import load_ruleset, seed_ruleset_path
from serving.proposing.filing import PROPOSER, backtest_summary
from serving.runtime import Runtime
from serving.scorer import ModelSet
from serving.settings import Settings


def busiest_lanes(*, history_dir: Path, count: int) -> list[tuple[str, str]]:
    """The (carrier, destination region) pairs that carried the most shipments."""
    shipments = pd.read_parquet(history_dir / "shipments.parquet", columns=["carrier", "dest_region"])
    sizes = shipments.astype(str).groupby(["carrier", "dest_region"]).size().sort_values(ascending=False)
    return list(sizes.index[:count])


def file_lane_proposals(*, database: Database, history_dir: Path, count: int = 2) -> list[int]:
    """One lane-penalty proposal per busy lane, each with a backtest of its change (rules-only risk)."""
    with transaction(sessions=database.sessions) as session:
        base = rulesets.ensure_seeded(session=session, ruleset=load_ruleset(path=seed_ruleset_path()))
        ruleset = rulesets.to_ruleset(version=base)
    replay = load_replay(folder=history_dir, max_orders=1_500)
    risk = prior_risk(replay=replay)
    old = replay_ruleset(replay=replay, ruleset=ruleset, risk=risk)
    filed = []
    for carrier, region in busiest_lanes(history_dir=history_dir, count=count):
        adjustment = {"id": f"lane-{carrier}-{region}", "carrier": carrier, "dest_regions": [region], "amount": 3.0}
        diff = [{"op": "add", "path": "/scoring/lane_adjustments/-", "value": adjustment}]
        new = replay_ruleset(replay=replay, ruleset=rulesets.patched(base=base, patch=diff), risk=risk)
        report = compare(replay=replay, old=old, new=new, sample=2, truth=recorded_truth(folder=history_dir))
        with transaction(sessions=database.sessions) as session:
            proposal = proposals.create(
                session=session,
                kind="rule_change",
                target=f"lane:{carrier}:{region}",
                diff=diff,
                rationale=f"{carrier} into {region} runs later than its peers; a penalty of 3.00 prices it in.",
                evidence={"lane": {"carrier": carrier, "dest_region": region}, "shipments": 1234},
                backtest=backtest_summary(report=report, risk=risk),
                proposer=PROPOSER,
                policy=Policy(),
            )
        filed.append(proposal.id)
    return filed


def console_runtime(*, database: Database, tmp_path: Path) -> Runtime:
    """A service runtime on a seeded database (no models: the console does not need them)."""
    with transaction(sessions=database.sessions) as session:
        version = rulesets.ensure_seeded(session=session, ruleset=load_ruleset(path=seed_ruleset_path()))
        ruleset = rulesets.to_ruleset(version=version)
    return Runtime(
        settings=Settings(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
        ruleset=ruleset,
        ruleset_version=version.number,
        models=ModelSet(),
        state=OnlineFeatureState(),
        database=database,
    )
