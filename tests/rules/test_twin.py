"""A ruleset routing the twin: valid allocations, and a lane penalty really moves volume and lateness."""

from __future__ import annotations

import pandas as pd
import pytest

from features.twin.scenario import load_scenario
from features.twin.simulate import simulate
from rules.schema import load_ruleset, parse_ruleset, seed_ruleset_path
from rules.twin import RulesetPolicy

SEED = load_ruleset(path=seed_ruleset_path())


@pytest.fixture(scope="module")
def scenario():
    """Fifty days of the trouble scenario: ecopost degrades on ncw from day 35."""
    base = load_scenario(source="trouble")
    demand = base.demand.model_copy(update={"base_orders_per_day": 700})
    events = tuple(e.model_copy(update={"end_day": 50}) for e in base.events)
    return base.model_copy(update={"days": 50, "demand": demand, "events": events})


def _run(scenario, ruleset):
    result = simulate(scenario=scenario, policy=RulesetPolicy(ruleset=ruleset))
    shipments = result.shipments.merge(result.truth, on="shipment_id")
    after = shipments["allocated_at"] >= pd.Timestamp(scenario.start_date) + pd.Timedelta(days=36)
    return result, shipments[after]


def test_a_lane_penalty_routes_the_twin_off_the_degraded_lane_and_lowers_its_true_lateness(scenario):
    document = SEED.model_dump(mode="json")
    document["scoring"]["lane_adjustments"] = [
        {"id": "ecopost-ncw", "carrier": "ecopost", "dest_regions": ["ncw"], "amount": 3.0}
    ]
    penalised = parse_ruleset(document=document, origin="test")
    seed_result, seed_after = _run(scenario, SEED)
    lane_result, lane_after = _run(scenario, penalised)
    assert seed_result.stats["shipments"] > 0.8 * seed_result.stats["orders"]
    lane = (seed_after["carrier"] == "ecopost") & (seed_after["dest_region"] == "ncw")
    assert lane.sum() > 500
    assert ((lane_after["carrier"] == "ecopost") & (lane_after["dest_region"] == "ncw")).sum() == 0
    into_ncw = seed_after["dest_region"] == "ncw"
    assert (
        lane_after.loc[lane_after["dest_region"] == "ncw", "p_true_carrier_delay"].mean()
        < seed_after.loc[into_ncw, "p_true_carrier_delay"].mean()
    )
