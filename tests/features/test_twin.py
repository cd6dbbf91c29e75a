"""The network twin: deterministic, policy-driven, and shaped like real delivery history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.errors import PolicyError, ScenarioError
from features.history import load_history
from features.labels import carrier_delay, late_handover
from features.twin.output import read_manifest, write_simulation
from features.twin.policy import Allocation, DecisionBatch, baseline_policy, choose_services
from features.twin.scenario import ScenarioEvent, load_scenario
from features.twin.simulate import simulate
from tests.conftest import small_scenario


def test_same_seed_gives_byte_identical_history(tmp_path, small_run):
    again = simulate(scenario=small_scenario())
    for name in ("shipments", "truth", "orders", "order_lines", "candidates", "node_days", "node_waves"):
        pd.testing.assert_frame_equal(getattr(small_run, name), getattr(again, name))
    first = write_simulation(result=small_run, scenario=small_scenario(), seed=7, out_dir=tmp_path / "a")
    second = write_simulation(result=again, scenario=small_scenario(), seed=7, out_dir=tmp_path / "b")
    assert first["files"] == second["files"]  # sha256 of every written file


def test_another_seed_gives_another_history(small_run):
    other = simulate(scenario=small_scenario(), seed=8)
    assert not small_run.shipments["handed_over_at"].equals(other.shipments["handed_over_at"])


def test_written_history_validates_and_keeps_truth_apart(small_history_dir):
    history, report = load_history(path=small_history_dir)
    assert report.rows_kept == report.rows_read > 5_000
    assert not any(c.startswith("p_true") or c.startswith("p_decision") for c in history.shipments.columns)
    manifest = read_manifest(folder=small_history_dir)
    assert manifest["files"]["truth/shipment_truth.parquet"]["rows"] == report.rows_read


def test_network_has_every_node_type_and_carrier(small_run):
    nodes = small_run.network.nodes_frame()
    assert set(nodes["node_type"]) == {"dc", "store", "3pl", "dropship"}
    assert len(nodes) == 25
    assert small_run.shipments["carrier"].nunique() == 4
    assert small_run.shipments["dest_zone"].nunique() >= 50


def test_decision_inputs_are_recorded_for_every_order(small_run):
    candidates = small_run.candidates
    assert set(candidates["order_id"].astype(str)) >= set(small_run.shipments["order_id"])
    shipped_from = small_run.shipments[["order_id", "node_id"]].astype(str)
    offered = candidates[["order_id", "node_id"]].astype(str)
    merged = shipped_from.merge(offered.drop_duplicates(), how="left", indicator=True)
    assert (merged["_merge"] == "both").all(), "every shipment's node was one of the order's candidates"


def test_truth_columns_are_probabilities(small_run):
    truth = small_run.truth.dropna()
    for column in (
        "p_true_late_handover",
        "p_true_carrier_delay",
        "p_decision_late_handover",
        "p_decision_carrier_delay",
    ):
        assert truth[column].between(0, 1).all()
    merged = small_run.shipments.merge(small_run.truth, on="shipment_id")
    label = late_handover(shipments=merged)
    known = ~np.isnan(label) & merged["p_true_late_handover"].notna().to_numpy()
    # The labels were drawn from p_true: their means agree within sampling error.
    assert abs(label[known].mean() - merged["p_true_late_handover"].to_numpy()[known].mean()) < 0.02


def _load_aware_policy(batch: DecisionBatch) -> Allocation:
    """Nearest node holding the whole order that stays under 85% of its capacity, tracking load as it goes."""
    base = baseline_policy(batch)
    full = (1 << batch.order_n_lines) - 1
    load = batch.node_backlog + batch.node_assigned
    chosen = np.full(batch.n_orders, -1)
    starts = np.searchsorted(batch.cand_order, np.arange(batch.n_orders + 1))
    for order in range(batch.n_orders):
        span = slice(starts[order], starts[order + 1])
        nodes = batch.cand_node[span][batch.cand_mask[span] == full[order]]
        if nodes.size == 0:
            continue
        utilisation = (load[nodes] + 1) / batch.node_capacity[nodes]
        roomy = nodes[utilisation < 0.85]
        pick = roomy[0] if roomy.size else nodes[np.argmin(utilisation)]
        chosen[order] = pick
        load[pick] += 1
    line_node = np.where(chosen[batch.line_order] >= 0, chosen[batch.line_order], base.line_node)
    keys, inverse = np.unique(batch.line_order * batch.network.n_nodes + line_node, return_inverse=True)
    services = choose_services(
        batch=batch, ship_order=keys // batch.network.n_nodes, ship_node=keys % batch.network.n_nodes
    )
    return Allocation(line_node=line_node, line_service=services[inverse])


def test_congestion_is_caused_by_the_policys_own_load():
    scenario = small_scenario(days=28, orders_per_day=600)
    baseline = simulate(scenario=scenario)
    spread = simulate(scenario=scenario, policy=_load_aware_policy)
    rate_baseline = np.nanmean(late_handover(shipments=baseline.shipments))
    rate_spread = np.nanmean(late_handover(shipments=spread.shipments))
    assert rate_spread < 0.8 * rate_baseline, (rate_spread, rate_baseline)


def test_a_policy_that_ships_from_a_node_without_stock_is_refused():
    def reckless(batch: DecisionBatch) -> Allocation:
        allocation = baseline_policy(batch)
        holds = batch.network.coverage[:, batch.line_sku]
        # Send every line to a node that does not carry its SKU.
        line_node = np.argmin(holds, axis=0)
        return Allocation(line_node=line_node, line_service=allocation.line_service)

    with pytest.raises(PolicyError, match="cannot supply"):
        simulate(scenario=small_scenario(days=2), policy=reckless)


def test_scenario_events_degrade_a_carrier_on_a_region():
    calm = simulate(scenario=small_scenario(days=30))
    carrier, region = calm.shipments.groupby(["carrier", "dest_region"]).size().idxmax()
    event = ScenarioEvent(
        kind="carrier_degradation", carrier=carrier, region=region, start_day=10, end_day=30, severity=2.5
    )
    troubled = simulate(scenario=small_scenario(days=30, events=(event,)))

    def lane_rate(run) -> float:
        s = run.shipments
        lane = (s["carrier"] == carrier) & (s["dest_region"] == region) & (s["order_time"] >= "2026-09-14")
        return float(np.nanmean(carrier_delay(shipments=s[lane])))

    assert lane_rate(troubled) > 2 * lane_rate(calm)


def test_node_capacity_event_raises_late_handover_on_its_weekdays():
    loss = ScenarioEvent(
        kind="node_capacity", node="DC01", start_day=0, end_day=28, capacity_factor=0.5, weekdays=(0,), announced=True
    )
    run = simulate(scenario=small_scenario(days=28, events=(loss,)))
    s = run.shipments[run.shipments["node_id"] == "DC01"]
    late = late_handover(shipments=s)
    monday = s["allocated_at"].dt.day_of_week.to_numpy() == 0
    assert np.nanmean(late[monday]) > 1.5 * np.nanmean(late[~monday])


def test_unknown_scenario_and_bad_yaml_are_clear_errors(tmp_path):
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        load_scenario(source="nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstart_date: 2026-01-01\ndays: -3\n")
    with pytest.raises(ScenarioError, match="days"):
        load_scenario(source=str(bad))


def test_default_network_reproduces_the_shape_of_real_delivery_history():
    """Lateness rises with load, late handovers propagate, delays are long-tailed, the peak hurts."""
    from datetime import date

    from features.history import stylized_facts

    scenario = small_scenario(days=60, orders_per_day=1500, start_date=date(2026, 10, 15))
    run = simulate(scenario=scenario)
    shipments = run.shipments
    facts = stylized_facts(shipments=shipments, min_week_shipments=100)
    assert 0.03 < facts["carrier_delay_rate"] < 0.2
    assert 0.02 < facts["late_handover_rate"] < 0.2
    assert facts["late_given_late_handover"] > 2 * facts["late_given_on_time_handover"]
    assert facts["days_late_p90"] >= 2 * facts["days_late_median"]
    assert facts["peak_week_late"] > 1.5 * facts["weekly_late_median"]
    # Late handover rises with the node's load that day.
    days = run.node_days.assign(load=lambda d: (d["assigned"] + d["backlog_start"]) / d["capacity"])
    merged = shipments.assign(date=shipments["allocated_at"].dt.floor("D")).merge(days, on=["date", "node_id"])
    merged["late"] = late_handover(shipments=merged)
    by_load = merged.groupby(pd.cut(merged["load"], [0, 0.6, 0.9, 1.2, 10]), observed=True)["late"].mean()
    assert by_load.is_monotonic_increasing, by_load


def test_the_trouble_scenario_shows_its_injected_troubles_in_the_history(tmp_path):
    """ecopost degrades on ncw from day 35; DC02 loses capacity on Mondays from day 28 (both unannounced)."""
    base = load_scenario(source="trouble")
    demand = base.demand.model_copy(update={"base_orders_per_day": 1500})
    events = tuple(e.model_copy(update={"end_day": 70}) for e in base.events)
    scenario = base.model_copy(update={"days": 70, "demand": demand, "events": events})
    write_simulation(result=simulate(scenario=scenario), scenario=scenario, seed=scenario.seed, out_dir=tmp_path)
    shipments = load_history(path=tmp_path)[0].shipments
    day = (shipments["allocated_at"] - pd.Timestamp(scenario.start_date)).dt.days
    late = shipments["delivered_at"] >= shipments["promised_delivery"] + pd.Timedelta(days=1)
    lane = (shipments["carrier"] == "ecopost") & (shipments["dest_region"] == "ncw")
    before, after = late[lane & (day < 35)].mean(), late[lane & (day >= 40)].mean()
    others = late[~lane & (day >= 40)].mean()
    assert after > 2 * before and after > 1.5 * others
    node = (shipments["node_id"] == "DC02") & (day >= 28)
    late_handover = shipments["handed_over_at"] > shipments["ship_by"]
    monday = shipments["allocated_at"].dt.day_of_week == 0
    assert late_handover[node & monday].mean() > 3 * late_handover[node & ~monday].mean()
