"""The backtest replays recorded decisions through two rulesets and says what changes, and what it cannot know."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rules.backtest import LIMITATIONS, compare, load_replay, prior_risk, recorded_truth, replay_ruleset, truth_figures
from rules.errors import RulesError
from rules.schema import load_ruleset, parse_ruleset, seed_ruleset_path

SEED = load_ruleset(path=seed_ruleset_path())


@pytest.fixture(scope="module")
def replay(twin_dir):
    return load_replay(folder=twin_dir, max_orders=6_000)


def _with_lane_penalty(carrier: str, region: str, amount: float = 3.0):
    document = SEED.model_dump(mode="json")
    document["name"] = "lane-penalty"
    document["scoring"]["lane_adjustments"] = [
        {"id": "penalty", "carrier": carrier, "dest_regions": [region], "amount": amount}
    ]
    return parse_ruleset(document=document, origin="test")


def test_the_replay_rebuilds_each_decision_from_the_recorded_candidates_and_rate_card(replay, twin_dir):
    b = replay.batch
    assert b.n_orders == 6_000 and np.all(np.diff(replay.decided_at.astype(np.int64)) >= 0)
    assert np.isfinite(b.cand_capacity).all() and (b.cand_assigned >= 0).all()
    services = pd.read_parquet(twin_dir / "services.parquet")
    sold = set(zip(services["carrier"], services["service"], services["dest_region"]))
    dest = b.order_dest_region[b.cand_order[b.opt_cand]]
    assert set(zip(b.opt_carrier, b.opt_service, dest)) <= sold
    # Every order's recorded candidates are there, and the node history chose is one of them.
    shipments = pd.read_parquet(twin_dir / "shipments.parquet", columns=["order_id", "node_id", "attempt"])
    first = shipments[shipments["attempt"] == 1].drop_duplicates("order_id").set_index("order_id")["node_id"]
    chosen = first.reindex(replay.order_id).dropna()
    offered = set(zip(replay.order_id[b.cand_order], b.cand_node))
    assert len(chosen) > 5_000 and all((o, n) in offered for o, n in chosen.astype(str).items())


def test_a_ruleset_against_itself_changes_nothing(replay):
    risk = prior_risk(replay=replay)
    a, b = (replay_ruleset(replay=replay, ruleset=SEED, risk=risk) for _ in range(2))
    report = compare(replay=replay, old=a, new=b)
    assert report["changed_share"] == 0.0 and report["old"] == report["new"]
    assert report["new"]["routed"] > 0.95 * report["orders"] and report["limitations"] == LIMITATIONS


def test_a_lane_penalty_moves_shipments_off_that_lane_and_only_that_destination(replay):
    risk = prior_risk(replay=replay)
    old = replay_ruleset(replay=replay, ruleset=SEED, risk=risk)
    busiest = old.shipments.groupby(["carrier", "dest_region"]).size().idxmax()
    new = replay_ruleset(replay=replay, ruleset=_with_lane_penalty(*busiest), risk=risk)
    report = compare(replay=replay, old=old, new=new, sample=3)
    moved = [lane for lane in report["lanes"] if lane["shipments_change"] != 0]
    assert moved and {lane["dest_region"] for lane in moved} == {busiest[1]}
    lane = next(x for x in report["lanes"] if (x["carrier"], x["dest_region"]) == busiest)
    assert lane["shipments_new"] < lane["shipments_old"]
    assert 0 < report["changed_share"] < 1 and report["new"]["cost_per_order"] >= report["old"]["cost_per_order"]
    example = report["sample"][0]
    assert {o["chosen"] for o in example["old"]["options"]} == {True, False}
    assert any(o["excluded_by"] is None for o in example["new"]["options"])


def test_an_empty_window_or_a_folder_without_decisions_is_a_clear_error(twin_dir, tmp_path):
    with pytest.raises(RulesError, match="no recorded decisions"):
        load_replay(folder=twin_dir, start=pd.Timestamp("2020-01-01"), end=pd.Timestamp("2020-02-01"))
    with pytest.raises(RulesError, match="not a twin history"):
        load_replay(folder=tmp_path)


def test_on_twin_data_each_side_gets_its_expected_and_true_on_time_where_history_knows_the_truth(replay, twin_dir):
    truth = recorded_truth(folder=twin_dir)
    outcome = replay_ruleset(replay=replay, ruleset=SEED, risk=prior_risk(replay=replay))
    report = compare(replay=replay, old=outcome, new=outcome, truth=truth)
    figures = report["truth"]["old"]
    assert 0 < figures["known_share"] <= 1 and 0 < figures["true_on_time"] < 1
    assert figures["gap"] == pytest.approx(figures["expected_on_time"] - figures["true_on_time"], abs=2e-5)
    # Keep the truth of one planned shipment only: the figures are exactly that shipment's.
    s = outcome.shipments
    plans = pd.DataFrame(
        {
            "order_id": replay.order_id[s["order"].to_numpy()].astype(str),
            "node_id": s["node_id"].to_numpy(),
            "carrier": s["carrier"].to_numpy(),
            "service": s["service"].to_numpy(),
            "row": np.arange(len(s)),
        }
    ).merge(truth, on=["order_id", "node_id", "carrier", "service"])
    first = plans.iloc[0]
    one = truth[
        truth["order_id"].eq(first["order_id"])
        & truth["node_id"].eq(first["node_id"])
        & truth["carrier"].eq(first["carrier"])
        & truth["service"].eq(first["service"])
    ]
    planned = s.iloc[int(first["row"])]
    alone = truth_figures(replay=replay, outcome=outcome, truth=one)
    expected_true = float((1 - one["p_true_carrier_delay"].iloc[0]) * (1 - one["p_true_late_handover"].iloc[0]))
    assert alone["true_on_time"] == pytest.approx(expected_true, abs=1e-5)
    assert alone["expected_on_time"] == pytest.approx(1 - planned["p_late"], abs=1e-5)
    assert alone["known_share"] == pytest.approx(1 / len(outcome.shipments), abs=1e-5)


def test_a_history_that_was_not_simulated_has_no_truth(tmp_path):
    assert recorded_truth(folder=tmp_path) is None
