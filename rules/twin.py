"""A ruleset as the twin's routing policy: the network twin run forward with the columnar engine deciding.

Each decision wave of the twin becomes one engine batch (the wave's candidates, stock, node loads
and rate card), is decided under the ruleset, and goes back to the twin as an allocation, so the
twin's own truth says what the ruleset would really have done — including the congestion its
routing causes, which a replay of history cannot show.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from features.twin.network import REGIONS
from features.twin.policy import Allocation, DecisionBatch
from features.twin.scenario import NODE_TYPES, SERVICES, TIERS
from rules.batch import OrderBatch, decide_orders, weekday_of
from rules.engine import PriorScorer
from rules.schema import Ruleset

# (batch, option candidate rows, option carrier-service indices) -> (P(carrier delay), P(node congestion))
TwinRisk = Callable[[DecisionBatch, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def prior_twin_risk(
    *, carrier_delay: dict[str, float] | None = None, node_congestion: dict[str, float] | None = None
) -> TwinRisk:
    """Rules-only risk for the twin: a fixed prior per carrier and per node type."""
    priors = PriorScorer(carrier_delay=carrier_delay, node_congestion=node_congestion)

    def risk(batch: DecisionBatch, option_cand: np.ndarray, option_cs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        net = batch.network
        carriers = net.carrier_names[net.cs_carrier[option_cs]]
        types = np.array(NODE_TYPES, dtype=object)[net.node_type[batch.cand_node[option_cand]]]
        return priors.priors(carriers=carriers, node_types=types)

    return risk


class RulesetPolicy:
    """Routes each twin decision wave with the engine under one ruleset."""

    def __init__(self, *, ruleset: Ruleset, risk: TwinRisk | None = None) -> None:
        self.ruleset = ruleset
        self.risk = risk or prior_twin_risk()

    def observe(self, shipments) -> None:
        """Hand a day's shipments to a risk source that learns from the run (the models' features)."""
        observe = getattr(self.risk, "observe", None)
        if observe is not None:
            observe(shipments)

    def __call__(self, batch: DecisionBatch) -> Allocation:
        """Allocate every line of the wave."""
        columns, option_cand, option_cs, order_of_cand = _columns(batch=batch)
        p_carrier, p_congestion = self.risk(batch, order_of_cand[option_cand], option_cs)
        decisions = decide_orders(batch=columns, ruleset=self.ruleset, p_carrier=p_carrier, p_congestion=p_congestion)
        n_lines = len(batch.line_order)
        line_node = np.full(n_lines, -1, dtype=np.int64)
        line_service = np.full(n_lines, -1, dtype=np.int64)
        # Each order's lines by line number, to send each shipment's lines where it goes.
        line_index = np.full(columns.unit_quantity.shape, -1, dtype=np.int64)
        line_index[batch.line_order, batch.line_no] = np.arange(n_lines)
        used = decisions.chosen_option >= 0
        order = np.repeat(np.arange(batch.n_orders), used.shape[1])[used.ravel()]
        rows = decisions.chosen_option[used]
        masks = decisions.chosen_mask[used]
        node = batch.cand_node[order_of_cand[option_cand[rows]]]
        for unit in range(columns.unit_quantity.shape[1]):
            carries = (masks >> unit) & 1 == 1
            lines = line_index[order[carries], unit]
            valid = lines >= 0
            line_node[lines[valid]] = node[carries][valid]
            line_service[lines[valid]] = option_cs[rows[carries]][valid]
        return Allocation(line_node=line_node, line_service=line_service)


def _columns(*, batch: DecisionBatch) -> tuple[OrderBatch, np.ndarray, np.ndarray, np.ndarray]:
    """The wave as engine columns; also each option's candidate row and carrier service, and the candidates' order."""
    net = batch.network
    n_orders = batch.n_orders
    width = int(batch.order_n_lines.max(initial=1))
    quantity = np.zeros((n_orders, width), dtype=np.int64)
    hazmat = np.zeros((n_orders, width), dtype=bool)
    quantity[batch.line_order, batch.line_no] = batch.line_qty
    hazmat[batch.line_order, batch.line_no] = batch.line_hazmat
    # Candidates grouped by order and sorted by node id, as the engine expects.
    node_rank = np.argsort(np.argsort(net.node_ids.astype(str)))
    order_of_cand = np.lexsort((node_rank[batch.cand_node], batch.cand_order))
    cand_order = batch.cand_order[order_of_cand]
    cand_node = batch.cand_node[order_of_cand]
    region = net.zone_region[batch.order_zone[cand_order]]
    band = net.band[batch.order_zone[cand_order], cand_node]
    sold = net.cs_transit[:, region, band].T >= 0  # candidates x carrier services
    option_cand, option_cs = np.nonzero(sold)
    transit = net.cs_transit[option_cs, region[option_cand], band[option_cand]]
    cost = net.cs_cost[option_cs, region[option_cand], band[option_cand]]
    ship_by_day = batch.ship_by_day(node=cand_node, decision_time=batch.decision_time[cand_order])
    columns = OrderBatch(
        order_tier=np.array(TIERS, dtype=object)[batch.order_tier],
        order_dest_region=np.array(REGIONS, dtype=object)[net.zone_region[batch.order_zone]],
        order_promised_day=batch.order_promised_day.astype(np.int64),
        order_n_units=batch.order_n_lines.astype(np.int64),
        unit_quantity=quantity,
        unit_hazmat=hazmat,
        cand_order=cand_order.astype(np.int64),
        cand_node=net.node_ids[cand_node].astype(object),
        cand_node_type=np.array(NODE_TYPES, dtype=object)[net.node_type[cand_node]],
        cand_handling_cost=net.node_handling_cost[cand_node].astype(np.float64),
        cand_supply=batch.cand_mask[order_of_cand].astype(np.int64),
        cand_capacity=batch.node_capacity[cand_node].astype(np.float64),
        cand_assigned=batch.node_assigned[cand_node].astype(np.float64),
        opt_cand=option_cand.astype(np.int64),
        opt_carrier=net.carrier_names[net.cs_carrier[option_cs]].astype(object),
        opt_service=np.array(SERVICES, dtype=object)[net.cs_service[option_cs]],
        opt_cost=cost.astype(np.float64),
        opt_transit_days=transit.astype(np.int64),
        opt_ship_by_day=ship_by_day[option_cand].astype(np.int64),
        opt_excluded=np.zeros(len(option_cand), dtype=bool),
        order_weekday=weekday_of(batch.decision_time),
    )
    return columns, option_cand, option_cs, order_of_cand
