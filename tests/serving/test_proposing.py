"""Proposals from the models on the trouble scenario: the degraded lane is found, proposed once, with a backtest."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from approvals import proposals, rulesets
from approvals.db import transaction
from approvals.policy import Policy
from features.history import load_history
from features.offline import build_features
from features.twin.output import write_simulation
from features.twin.scenario import load_scenario
from features.twin.simulate import simulate
from rules.backtest import load_replay
from rules.schema import load_ruleset, seed_ruleset_path
from serving.proposing.capacity import capacity_changes, capacity_findings
from serving.proposing.filing import file_changes
from serving.proposing.lanes import lane_changes, lane_findings
from serving.scorer import ModelSet, replay_risk
from tests.conftest import migrated_sqlite
from training.datasets import default_windows
from training.tracking import configure, load_registered
from training.train import train_model


@dataclass(frozen=True)
class TroubleRun:
    folder: Path
    history: object
    table: pd.DataFrame
    model: object
    store: str
    congestion_table: pd.DataFrame
    congestion: object


@pytest.fixture(scope="module")
def trouble(tmp_path_factory):
    """Seventy days of the trouble scenario (ecopost degrades on ncw from day 35, DC02 loses Monday capacity from
    day 28), and its two champions."""
    base = load_scenario(source="trouble")
    demand = base.demand.model_copy(update={"base_orders_per_day": 1500})
    events = tuple(e.model_copy(update={"end_day": 70}) for e in base.events)
    scenario = base.model_copy(update={"days": 70, "demand": demand, "events": events})
    folder = tmp_path_factory.mktemp("trouble") / "history"
    write_simulation(result=simulate(scenario=scenario), scenario=scenario, seed=scenario.seed, out_dir=folder)
    history, _ = load_history(path=folder)
    tables = build_features(history=history)
    store = configure(tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")
    for name in ("carrier_delay", "node_congestion"):
        train_model(model_name=name, table=tables[name], windows=default_windows(table=tables[name]))
    return TroubleRun(
        folder=folder,
        history=history,
        table=tables["carrier_delay"],
        model=load_registered(model_name="carrier_delay", alias="champion"),
        store=store,
        congestion_table=tables["node_congestion"],
        congestion=load_registered(model_name="node_congestion", alias="champion"),
    )


def test_the_degraded_lane_is_found_and_few_others(trouble):
    folder, history, model = trouble.folder, trouble.history, trouble.model
    since = history.shipments["allocated_at"].max().floor("D") - pd.Timedelta(days=14)
    findings = lane_findings(history=history, services=_services(folder), model=model, since=since)
    targets = [f.target for f in findings]
    assert "lane:ecopost:ncw" in targets and len(targets) <= 3, targets
    found = next(f for f in findings if f.target == "lane:ecopost:ncw")
    assert found.risk_low > found.peers_risk and found.shipments >= 200


def test_each_finding_becomes_one_pending_proposal_with_its_evidence_and_backtest(trouble, tmp_path):
    folder, history, model = trouble.folder, trouble.history, trouble.model
    database = migrated_sqlite(folder=tmp_path)
    with transaction(sessions=database.sessions) as session:
        rulesets.ensure_seeded(session=session, ruleset=load_ruleset(path=seed_ruleset_path()))
    since = history.shipments["allocated_at"].max().floor("D") - pd.Timedelta(days=14)
    found = lane_findings(history=history, services=_services(folder), model=model, since=since)
    findings = [f for f in found if f.dest_region == "ncw"]
    replay = load_replay(folder=folder, max_orders=4_000)
    risk = replay_risk(replay=replay, history=history, models=ModelSet(carrier_delay=model))
    window = (str(since), str(history.shipments["allocated_at"].max()))
    changes = [lane_changes(findings=findings, policy=Policy(), model=model, window=window)]
    args = dict(database=database, changes=changes, replay=replay, risk=risk, policy=Policy())
    filed = file_changes(**args)
    assert [f["target"] for f in filed if "proposal" in f] == ["lane:ecopost:ncw"]
    with database.sessions() as session:
        proposal = proposals.get(session=session, proposal_id=filed[0]["proposal"])
    assert proposal.status == "pending" and proposal.proposer == "riskroute-propose"
    assert proposal.diff[0]["value"]["carrier"] == "ecopost" and 0 < proposal.diff[0]["value"]["amount"] <= 10
    assert proposal.evidence["model"]["version"] == model.version and "interval_95" in proposal.evidence
    lanes = {(x["carrier"], x["dest_region"]): x for x in proposal.backtest["lanes"]}
    assert lanes[("ecopost", "ncw")]["shipments_new"] < lanes[("ecopost", "ncw")]["shipments_old"]
    assert "ecopost" in proposal.rationale and "ncw" in proposal.rationale
    # Asked again, nothing new: the pending proposal for the lane stands.
    assert all("skipped" in f for f in file_changes(**args))
    database.dispose()


def test_the_propose_command_files_the_lane_and_says_so(trouble, tmp_path):
    url = f"sqlite:///{tmp_path / 'riskroute.db'}"
    env = {**os.environ, "RISKROUTE_DATABASE_URL": url, "RISKROUTE_MLFLOW_TRACKING_URI": trouble.store}
    run = [sys.executable, "-m", "serving"]
    assert subprocess.run([*run, "db", "upgrade"], env=env, capture_output=True, timeout=120).returncode == 0
    args = [*run, "propose", "--history", str(trouble.folder), "--backtest-orders", "2000"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "lane:ecopost:ncw (lane penalty" in done.stdout
    assert "capacity:DC02:mon (cap" in done.stdout
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert "already pending" in again.stdout


def test_the_node_losing_monday_capacity_is_found_and_few_others(trouble):
    since = trouble.history.shipments["allocated_at"].max().floor("D") - pd.Timedelta(days=14)
    seed = load_ruleset(path=seed_ruleset_path())
    findings = capacity_findings(table=trouble.congestion_table, model=trouble.congestion, ruleset=seed, since=since)
    targets = [f.target for f in findings]
    assert "capacity:DC02:mon" in targets and len(targets) <= 4, targets
    found = next(f for f in findings if f.target == "capacity:DC02:mon")
    assert found.risk_low > seed.eligibility.capacity.target_risk and found.rows >= 200
    # The injected trouble is Mondays only: DC02's other quiet days are not findings.
    assert not {"capacity:DC02:thu", "capacity:DC02:fri", "capacity:DC02:sat", "capacity:DC02"} & set(targets)


def test_a_capacity_finding_becomes_a_weekday_cap_within_the_guardrail_needing_two_approvals(trouble, tmp_path):
    database = migrated_sqlite(folder=tmp_path)
    with transaction(sessions=database.sessions) as session:
        rulesets.ensure_seeded(session=session, ruleset=load_ruleset(path=seed_ruleset_path()))
    since = trouble.history.shipments["allocated_at"].max().floor("D") - pd.Timedelta(days=14)
    seed = load_ruleset(path=seed_ruleset_path())
    findings = [
        f
        for f in capacity_findings(table=trouble.congestion_table, model=trouble.congestion, ruleset=seed, since=since)
        if f.node_id == "DC02"
    ]
    replay = load_replay(folder=trouble.folder, max_orders=4_000)
    models = ModelSet(carrier_delay=trouble.model, node_congestion=trouble.congestion)
    risk = replay_risk(replay=replay, history=trouble.history, models=models)
    changes = [
        capacity_changes(findings=findings, policy=Policy(), model=trouble.congestion, window=(str(since), "end"))
    ]
    filed = file_changes(database=database, changes=changes, replay=replay, risk=risk, policy=Policy())
    monday = next(f for f in filed if f["target"] == "capacity:DC02:mon")
    with database.sessions() as session:
        proposal = proposals.get(session=session, proposal_id=monday["proposal"])
    finding = next(f for f in findings if f.target == "capacity:DC02:mon")
    (op,) = proposal.diff
    assert op["path"] == "/eligibility/capacity/weekday_overrides/DC02"
    assert Policy().max_capacity_change >= 1 - op["value"]["mon"] / finding.current_cap > 0
    assert proposal.required_approvals == 2  # a capacity cut
    assert proposal.evidence["current_caps"] == {"DC02/mon": finding.current_cap}
    assert "DC02" in proposal.rationale and "Mondays" in proposal.rationale
    nodes = {x["node_id"]: x for x in proposal.backtest["nodes"]}
    assert nodes["DC02"]["shipments_new"] <= nodes["DC02"]["shipments_old"]
    database.dispose()


def _services(folder):
    return pd.read_parquet(folder / "services.parquet")


def test_a_challenger_that_beats_its_champion_is_proposed_for_promotion_once_with_a_routing_backtest(
    tables, tracking, twin, twin_dir, tmp_path
):
    from serving.proposing.promotions import promotion_backtest, propose_promotions
    from serving.runtime import MlflowChampions

    table = tables["node_congestion"]
    windows = default_windows(table=table)
    # The champion learned from one in ten of its training rows; the challenger from all of them.
    starved = table[(table["allocated_at"] >= windows.valid_start) | (table.index % 10 == 0)]
    train_model(model_name="node_congestion", table=starved, windows=windows)
    train_model(model_name="node_congestion", table=table, windows=windows)
    database = migrated_sqlite(folder=tmp_path)
    with transaction(sessions=database.sessions) as session:
        rulesets.ensure_seeded(session=session, ruleset=load_ruleset(path=seed_ruleset_path()))
    registry = MlflowChampions(tracking_uri=tracking)
    replay = load_replay(folder=twin_dir, max_orders=1_500)
    models = ModelSet(node_congestion=load_registered(model_name="node_congestion", alias="champion"))
    risk = replay_risk(replay=replay, history=twin, models=models)
    seed = load_ruleset(path=seed_ruleset_path())
    backtest = promotion_backtest(replay=replay, history=twin, models=models, risk=risk, ruleset=seed)
    args = dict(database=database, policy=Policy(), champions=registry, model_names=("node_congestion",))
    (filed,) = propose_promotions(**args, backtest=backtest)
    with database.sessions() as session:
        proposal = proposals.get(session=session, proposal_id=filed["proposal"])
    assert proposal.kind == "model_promotion" and proposal.diff == {"model": "node_congestion", "version": "2"}
    # The same orders and ruleset, priced by the champion (v1) and by the challenger (v2).
    assert proposal.backtest["orders"] == 1_500 and proposal.backtest["old"]["ruleset"] == "seed"
    assert "node_congestion v1" in proposal.backtest["risk"] and "node_congestion v2" in proposal.backtest["risk"]
    assert proposal.backtest["old"]["expected_on_time"] != proposal.backtest["new"]["expected_on_time"]
    assert proposal.base_champion == "1"
    evidence = proposal.evidence
    assert evidence["challenger"]["logloss"] < evidence["champion"]["logloss"] and evidence["log_loss_gain"] >= 0.005
    assert "log loss" in proposal.rationale
    (again,) = propose_promotions(**args, backtest=backtest)
    assert "skipped" in again
    database.dispose()


def test_an_equal_challenger_is_not_proposed(tables, tracking, tmp_path):
    from serving.proposing.promotions import propose_promotions
    from serving.runtime import MlflowChampions

    table = tables["node_congestion"]
    for _ in range(2):
        train_model(model_name="node_congestion", table=table, windows=default_windows(table=table))
    database = migrated_sqlite(folder=tmp_path)
    registry = MlflowChampions(tracking_uri=tracking)
    args = dict(database=database, policy=Policy(), champions=registry, model_names=("node_congestion",))
    assert propose_promotions(**args) == []
    database.dispose()


@pytest.fixture(scope="module")
def priced(twin, twin_dir, champions_store):
    """The ten-week twin's newest 3,000 decisions, priced by its champions."""
    from tests.conftest import served_models

    replay = load_replay(folder=twin_dir, max_orders=3_000)
    return replay, replay_risk(replay=replay, history=twin, models=served_models(store=champions_store))


def test_late_penalties_follow_a_higher_valuation_of_late_premium_orders_within_the_guardrail(priced):
    from serving.proposing.weights import tune_late_penalty

    replay, risk = priced
    seed = load_ruleset(path=seed_ruleset_path())
    tuning = tune_late_penalty(replay=replay, ruleset=seed, risk=risk, values={"premium": 200.0})
    assert tuning.best.penalties["premium"] == 75.0  # as far as one proposal may move it (+50 %)
    assert tuning.best.total < tuning.base.total and tuning.gain > 0
    assert tuning.best.expected_on_time > tuning.base.expected_on_time
    assert [point["scale"] for point in tuning.sweep] == [0.5, 0.625, 0.75, 0.875, 1.0, 1.125, 1.25, 1.375, 1.5]
    # Valued at today's penalties, no tuned setting is worse than today's on the same replay.
    today = tune_late_penalty(replay=replay, ruleset=seed, risk=risk)
    assert today.best.total <= today.base.total


def test_a_late_penalty_proposal_carries_its_sweep_and_passes_the_guardrails(priced, tmp_path):
    from serving.proposing.weights import weight_changes

    database = migrated_sqlite(folder=tmp_path)
    with transaction(sessions=database.sessions) as session:
        rulesets.ensure_seeded(session=session, ruleset=load_ruleset(path=seed_ruleset_path()))
    replay, risk = priced
    values = {"premium": 200.0}
    changes = [weight_changes(replay=replay, risk=risk, policy=Policy(), window=("a", "b"), values=values)]
    (filed,) = file_changes(database=database, changes=changes, replay=replay, risk=risk, policy=Policy())
    with database.sessions() as session:
        proposal = proposals.get(session=session, proposal_id=filed["proposal"])
    assert proposal.target == "weights:late_penalty" and proposal.required_approvals == 1
    assert {"op": "replace", "path": "/scoring/late_penalty_by_tier/premium", "value": 75.0} in proposal.diff
    evidence = proposal.evidence
    assert evidence["lateness_valued_at"]["premium"] == 200.0 and len(evidence["sweep"]) == 9
    assert evidence["tuned"]["cost_plus_lateness"] < evidence["today"]["cost_plus_lateness"]
    assert proposal.backtest["new"]["expected_on_time"] > proposal.backtest["old"]["expected_on_time"]
    assert "premium 50 -> 75" in proposal.rationale
    database.dispose()


def test_protected_late_penalties_are_never_tuned(twin_dir):
    from rules.backtest import prior_risk
    from serving.proposing.weights import tune_late_penalty, weight_changes

    replay = load_replay(folder=twin_dir, max_orders=500)
    seed = load_ruleset(path=seed_ruleset_path())
    document = seed.model_dump(mode="json") | {"protected": ["scoring.late_penalty_by_tier"]}
    guarded = type(seed).model_validate(document)
    risk = prior_risk(replay=replay)
    assert tune_late_penalty(replay=replay, ruleset=guarded, risk=risk) is None
    build = weight_changes(replay=replay, risk=risk, policy=Policy(), window=("a", "b"), values={"premium": 500.0})
    assert build(guarded) == []


def _scheduled_service(*, tmp_path, history, store: str, every_hours: float = 0.0003):
    """The service with the proposer on a short schedule, over a seeded SQLite database."""
    from fastapi.testclient import TestClient

    from features.online import OnlineFeatureState
    from serving.app import create_app
    from serving.runtime import Runtime
    from serving.settings import Settings

    database = migrated_sqlite(folder=tmp_path)
    with transaction(sessions=database.sessions) as session:
        version = rulesets.ensure_seeded(session=session, ruleset=load_ruleset(path=seed_ruleset_path()))
        ruleset = rulesets.to_ruleset(version=version)
    settings = Settings(
        data_dir=tmp_path,
        warm_start_history=history,
        mlflow_tracking_uri=store,
        proposer={"every_hours": every_hours, "backtest_orders": 2_000, "late_cost": {"premium": 200.0}},
    )
    runtime = Runtime(
        settings=settings,
        ruleset=ruleset,
        ruleset_version=version.number,
        models=ModelSet(),
        state=OnlineFeatureState(),
        database=database,
    )
    return TestClient(create_app(runtime=runtime)), database


def _wait_for_metric(client, line: str, *, seconds: float = 240.0) -> str:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = client.get("/metrics").text
        if line in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"{line!r} never appeared in /metrics")


def test_the_service_runs_the_proposer_on_its_schedule_when_asked(twin_dir, champions_store, tmp_path):
    client, database = _scheduled_service(tmp_path=tmp_path, history=twin_dir, store=champions_store)
    with client:
        text = _wait_for_metric(client, 'riskroute_proposer_runs_total{outcome="done"} 1.0')
    with database.sessions() as session:
        filed = proposals.listing(session=session)
    assert filed and all(p.proposer == "riskroute-propose" and p.status == "pending" for p in filed)
    assert "weights:late_penalty" in {p.target for p in filed}  # premium lateness valued at 200
    assert f"riskroute_proposals_filed_total {float(len(filed))}" in text
    database.dispose()


def test_a_failed_scheduled_pass_is_counted_and_the_service_keeps_answering(tmp_path, champions_store):
    client, database = _scheduled_service(tmp_path=tmp_path, history=tmp_path / "no-history", store=champions_store)
    with client:
        _wait_for_metric(client, 'riskroute_proposer_runs_total{outcome="failed"} 1.0', seconds=60)
        assert client.get("/healthz").status_code == 200
    database.dispose()


def test_one_worker_per_data_folder_holds_the_proposer(tmp_path):
    from serving.app import _sole_proposer

    first = _sole_proposer(folder=tmp_path)
    assert first is not None and _sole_proposer(folder=tmp_path) is None
    first.close()
    again = _sole_proposer(folder=tmp_path)
    assert again is not None
    again.close()


def test_a_lane_too_late_for_any_allowed_penalty_is_also_proposed_blocked_for_the_tiers_it_fails(
    priced, twin_dir, champions_store, tmp_path
):
    from serving.proposing.lanes import LaneFinding
    from tests.conftest import served_models
    from tests.serving.console_fixtures import busiest_lanes

    database = migrated_sqlite(folder=tmp_path)
    with transaction(sessions=database.sessions) as session:
        rulesets.ensure_seeded(session=session, ruleset=load_ruleset(path=seed_ruleset_path()))
    replay, risk = priced
    ((carrier, region),) = busiest_lanes(history_dir=twin_dir, count=1)
    # Late 25 points more than its peers at the least: 50 x 0.25 = 12.5 a premium shipment, over the largest
    # lane penalty (10); 25 x 0.25 = 6.25 a plus shipment, under it.
    finding = LaneFinding(carrier, region, 900, 14, 0.40, 0.38, 0.42, 0.13, 0.41)
    model = served_models(store=champions_store).carrier_delay
    changes = [lane_changes(findings=[finding], policy=Policy(), model=model, window=("a", "b"))]
    filed = file_changes(database=database, changes=changes, replay=replay, risk=risk, policy=Policy())
    assert [f["target"] for f in filed] == [f"lane:{carrier}:{region}", f"lane-block:{carrier}:{region}"]
    with database.sessions() as session:
        block = proposals.get(session=session, proposal_id=filed[1]["proposal"])
    (op,) = block.diff
    assert op["value"] == {
        "id": f"block-{carrier}-{region}",
        "carrier": carrier,
        "dest_regions": [region],
        "tiers": ["premium"],
    }
    assert "premium" in block.rationale and block.evidence["interval_95"] == [0.38, 0.42]
    lanes = {(x["carrier"], x["dest_region"]): x for x in block.backtest["lanes"]}
    assert lanes[(carrier, region)]["shipments_new"] < lanes[(carrier, region)]["shipments_old"]
    database.dispose()
