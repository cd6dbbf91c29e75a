"""The routing engine: never an ineligible choice, never a costlier one than an eligible alternative, deterministic."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from datetime import date, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.engine import (
    Candidate,
    Order,
    OrderLine,
    PriorScorer,
    RiskScores,
    ShippingOption,
    _lane_adjustment,
    _option_rule,
    _option_rules,
    decide_batch,
)
from rules.schema import load_ruleset, seed_ruleset_path

SEED = load_ruleset(path=seed_ruleset_path())


def _subset_rule(*, ruleset, candidate, option, lines) -> str | None:
    """The brute force's own reading of the rules that depend on which lines a shipment carries."""
    if any(candidate.available.get(line.line_id, 0) < line.quantity for line in lines):
        return "inventory"
    if any(line.hazmat for line in lines):
        hazmat = ruleset.eligibility.hazmat
        if candidate.node_type not in hazmat.allowed_node_types or option.service in hazmat.forbidden_services:
            return hazmat.id
    return None


NOW = datetime(2026, 11, 2, 10, 0)
PROMISE = date(2026, 11, 6)


class TableScorer:
    """Risk read from a dict keyed by (node, carrier, service), so tests control it exactly."""

    def __init__(self, table: dict[tuple[str, str, str], tuple[float, float]]):
        self.table = table

    def score(self, queries):
        pairs = [self.table[(n, c, s)] for n, c, s in zip(queries.node_id, queries.carrier, queries.service)]
        return RiskScores(
            carrier_delay=np.array([p[0] for p in pairs]),
            node_congestion=np.array([p[1] for p in pairs]),
            degraded=np.zeros(len(pairs), dtype=bool),
        )


@st.composite
def scenarios(draw):
    """A random order, 2-6 candidate nodes with random stock and options, random risks."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    n_lines = draw(st.integers(1, 3))
    lines = tuple(
        OrderLine(line_id=f"L{i}", sku=f"K{i}", quantity=rng.choice([1, 1, 2]), hazmat=rng.random() < 0.1)
        for i in range(n_lines)
    )
    order = Order(
        order_id="O1",
        lines=lines,
        dest_region=rng.choice(["nw", "se"]),
        tier=rng.choice(["standard", "plus", "premium"]),
        promised_delivery=PROMISE,
        decided_at=NOW,
    )
    candidates, table = [], {}
    for n in range(draw(st.integers(2, 6))):
        node_id = f"N{n}"
        options = []
        for carrier, service in rng.sample(
            [("a", "ground"), ("a", "next_day"), ("b", "ground"), ("b", "two_day")], rng.randint(1, 3)
        ):
            options.append(
                ShippingOption(
                    carrier=carrier,
                    service=service,
                    cost=round(rng.uniform(4, 20), 2),
                    transit_days=rng.randint(1, 5),
                    ship_by=NOW + timedelta(hours=6),
                )
            )
            table[(node_id, carrier, service)] = (rng.uniform(0, 0.35), rng.uniform(0, 0.3))
        candidates.append(
            Candidate(
                node_id=node_id,
                node_type=rng.choice(["dc", "store", "3pl", "dropship"]),
                region="nw",
                handling_cost=round(rng.uniform(1, 3), 2),
                available={line.line_id: rng.choice([0, 1, 2, 5]) for line in lines},
                options=tuple(options),
                capacity=rng.choice([None, 10.0, 1.0]),
                assigned_today=rng.choice([0.0, 5.0, 9.5]),
            )
        )
    return order, candidates, TableScorer(table)


def _brute_force(order, candidates, scorer):
    """Every allocation by enumeration: each line to a node, each node's best eligible option."""
    queries_score = {}
    penalty = SEED.scoring.late_penalty_by_tier[order.tier]
    best_total = math.inf
    for assignment in itertools.product(range(len(candidates)), repeat=len(order.lines)):
        used = sorted(set(assignment))
        if len(used) > SEED.split.max_shipments:
            continue
        total = SEED.scoring.split_penalty * (len(used) - 1)
        for n in used:
            candidate = candidates[n]
            lines = [line for line, a in zip(order.lines, assignment) if a == n]
            costs = []
            for option in candidate.options:
                pc, pn = scorer.table[(candidate.node_id, option.carrier, option.service)]
                p_late = 1 - (1 - pc) * (1 - pn)
                if _option_rule(
                    ruleset=SEED,
                    order=order,
                    candidate=candidate,
                    option=option,
                    load=candidate.assigned_today,
                    p_late=p_late,
                ):
                    continue
                if _subset_rule(ruleset=SEED, candidate=candidate, option=option, lines=lines):
                    continue
                units = sum(line.quantity for line in lines)
                handling = candidate.handling_cost * (1 + SEED.scoring.handling_per_extra_unit * (units - 1))
                lane = _lane_adjustment(ruleset=SEED, carrier=option.carrier, dest_region=order.dest_region)
                costs.append(option.cost + handling + penalty * p_late + lane)
            total += min(costs, default=math.inf)
        best_total = min(best_total, total)
        queries_score[assignment] = total
    return best_total


@settings(max_examples=150, deadline=None)
@given(case=scenarios())
def test_the_choice_is_eligible_and_no_eligible_alternative_is_cheaper(case):
    order, candidates, scorer = case
    decision = decide_batch(orders=[order], candidates=[candidates], ruleset=SEED, scorer=scorer)[0]
    optimum = _brute_force(order, candidates, scorer)
    if decision.chosen is None:
        assert optimum == math.inf
        assert decision.unroutable_reason
        return
    assert decision.chosen.total == pytest.approx(optimum, abs=1e-9)
    by_id = {c.node_id: c for c in candidates}
    covered = [line for s in decision.chosen.shipments for line in s.lines]
    assert sorted(covered) == sorted(line.line_id for line in order.lines)
    assert len({s.node_id for s in decision.chosen.shipments}) == len(decision.chosen.shipments)
    for shipment in decision.chosen.shipments:
        candidate = by_id[shipment.node_id]
        option = next(o for o in candidate.options if (o.carrier, o.service) == (shipment.carrier, shipment.service))
        pc, pn = scorer.table[(candidate.node_id, option.carrier, option.service)]
        lines = [line for line in order.lines if line.line_id in shipment.lines]
        assert (
            _option_rule(
                ruleset=SEED,
                order=order,
                candidate=candidate,
                option=option,
                load=candidate.assigned_today,
                p_late=1 - (1 - pc) * (1 - pn),
            )
            is None
        )
        assert _subset_rule(ruleset=SEED, candidate=candidate, option=option, lines=lines) is None
    if decision.runner_up is not None:
        assert decision.margin == pytest.approx(decision.runner_up.total - decision.chosen.total)
        assert decision.margin >= 0


# The seed's rules plus region and lane blocks and tighter caps, so every kind of option rule can fire.
EVERY_RULE = SEED.model_validate(
    {
        **SEED.model_dump(mode="json"),
        "eligibility": {
            **SEED.model_dump(mode="json")["eligibility"],
            "regions": [
                {"id": "no-n1-to-se", "dest_regions": ["se"], "node_ids": ["N1"]},
                {"id": "no-stores-to-nw", "dest_regions": ["nw"], "node_types": ["store"]},
            ],
            "lanes": [{"id": "no-b-two-day-premium", "carrier": "b", "services": ["two_day"], "tiers": ["premium"]}],
            "capacity": {"id": "capacity", "default_share": 0.5, "overrides": {"N2": 3}},
        },
    }
)


@settings(max_examples=150, deadline=None)
@given(case=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_an_orders_options_are_judged_together_exactly_as_each_alone(case, seed):
    order, candidates, _ = case
    rng = random.Random(seed)
    nodes = [c.node_id for c in candidates]
    excluded = tuple(
        (rng.choice(nodes), rng.choice([None, "a", "b"]), rng.choice([None, "ground"]))
        for _ in range(rng.randint(0, 2))
    )
    order = dataclasses.replace(order, excluded=excluded)
    rows = [(candidate, option) for candidate in candidates for option in candidate.options]
    loads = {c.node_id: rng.choice([0.0, 2.0, 4.0, 9.5]) for c in candidates}
    p_late = [rng.uniform(0, 0.7) for _ in rows]
    together = _option_rules(ruleset=EVERY_RULE, order=order, rows=rows, loads=loads, p_late=p_late)
    alone = [
        _option_rule(ruleset=EVERY_RULE, order=order, candidate=c, option=o, load=loads[c.node_id], p_late=p)
        for (c, o), p in zip(rows, p_late)
    ]
    assert together == alone


@settings(max_examples=60, deadline=None)
@given(case=scenarios(), shuffle_seed=st.integers(0, 1000))
def test_the_same_inputs_give_the_same_decision_in_any_candidate_order(case, shuffle_seed):
    order, candidates, scorer = case
    first = decide_batch(orders=[order], candidates=[candidates], ruleset=SEED, scorer=scorer)[0]
    shuffled = candidates[:]
    random.Random(shuffle_seed).shuffle(shuffled)
    again = decide_batch(orders=[order], candidates=[shuffled], ruleset=SEED, scorer=scorer)[0]
    assert first == again


def _candidate(node_id, *, node_type="dc", stock=5, cost=8.0, capacity=None, assigned=0.0, service="ground"):
    return Candidate(
        node_id=node_id,
        node_type=node_type,
        region="nw",
        handling_cost=1.0,
        available={"L0": stock, "L1": stock},
        capacity=capacity,
        assigned_today=assigned,
        options=(ShippingOption(carrier="a", service=service, cost=cost, transit_days=2, ship_by=NOW),),
    )


def _order(**changes):
    base = dict(
        order_id="O1",
        lines=(OrderLine("L0", "K0"),),
        dest_region="nw",
        tier="standard",
        promised_delivery=PROMISE,
        decided_at=NOW,
    )
    return Order(**{**base, **changes})


def test_the_trace_names_the_rule_that_excluded_each_candidate():
    candidates = [
        _candidate("N1", stock=0),
        _candidate("N2", capacity=10, assigned=10),
        _candidate("N3", node_type="dropship", service="next_day"),
        _candidate("N4", cost=9.0),
    ]
    order = _order(lines=(OrderLine("L0", "K0", hazmat=True),))
    decision = decide_batch(orders=[order], candidates=[candidates], ruleset=SEED, scorer=PriorScorer())[0]
    reasons = {t.node_id: t.excluded_by for t in decision.candidates}
    assert reasons == {"N1": "inventory", "N2": "capacity", "N3": "no-dropship-next-day", "N4": None}
    assert decision.chosen.shipments[0].node_id == "N4"


def test_a_lane_block_excludes_its_carrier_for_its_tiers_on_its_regions_only():
    document = SEED.model_dump(mode="json")
    document["eligibility"]["lanes"] = [
        {"id": "no-a-nw-premium", "carrier": "a", "dest_regions": ["nw"], "tiers": ["premium"]}
    ]
    blocking = SEED.model_validate(document)
    candidates = [_candidate("N1")]

    def decided(**order):
        return decide_batch(orders=[_order(**order)], candidates=[candidates], ruleset=blocking, scorer=PriorScorer())[
            0
        ]

    premium = decided(tier="premium")
    assert premium.chosen is None and premium.candidates[0].excluded_by == "no-a-nw-premium"
    assert decided(tier="standard").chosen is not None  # another tier
    assert decided(tier="premium", dest_region="se").chosen is not None  # another region


def test_a_riskier_option_loses_when_its_late_penalty_outweighs_its_price():
    cheap_risky, dear_safe = _candidate("N1", cost=8.0), _candidate("N2", cost=10.0)
    scorer = TableScorer({("N1", "a", "ground"): (0.4, 0.1), ("N2", "a", "ground"): (0.02, 0.02)})
    decision = decide_batch(
        orders=[_order(tier="premium")], candidates=[[cheap_risky, dear_safe]], ruleset=SEED, scorer=scorer
    )[0]
    assert decision.chosen.shipments[0].node_id == "N2"
    assert {t.node_id: t.excluded_by for t in decision.candidates}["N1"] == "max_risk_premium"


def test_an_unroutable_order_says_why_instead_of_failing():
    decision = decide_batch(
        orders=[_order()], candidates=[[_candidate("N1", stock=0)]], ruleset=SEED, scorer=PriorScorer()
    )[0]
    assert decision.chosen is None and "L0" in decision.unroutable_reason


def test_an_order_with_no_candidates_or_no_options_is_unroutable_not_an_error():
    no_options = dataclasses.replace(_candidate("N1"), options=())
    for candidates in ([], [no_options]):
        decision = decide_batch(orders=[_order()], candidates=[candidates], ruleset=SEED, scorer=PriorScorer())[0]
        assert decision.chosen is None and decision.candidates == ()
        assert decision.unroutable_reason == "no eligible candidate ships line(s) L0"


def test_a_batch_counts_earlier_decisions_toward_capacity():
    orders = [_order(order_id=f"O{i}") for i in range(3)]
    candidates = [[_candidate("N1", capacity=2, assigned=0, cost=5.0), _candidate("N2", cost=9.0)]] * 3
    decisions = decide_batch(orders=orders, candidates=candidates, ruleset=SEED, scorer=PriorScorer())
    assert [d.chosen.shipments[0].node_id for d in decisions] == ["N1", "N1", "N2"]


def test_a_reroute_excludes_what_failed():
    order = _order(excluded=(("N1", None, None),))
    decision = decide_batch(
        orders=[order], candidates=[[_candidate("N1", cost=5.0), _candidate("N2")]], ruleset=SEED, scorer=PriorScorer()
    )[0]
    assert decision.chosen.shipments[0].node_id == "N2"
    assert {t.node_id: t.excluded_by for t in decision.candidates}["N1"] == "reroute_excluded"
