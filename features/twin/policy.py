"""The routing-policy interface of the twin and its built-in baseline policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from features.twin.network import Network

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class DecisionBatch:
    """The orders of one decision wave and everything a policy may know when routing them.

    Orders, lines and candidates are parallel arrays; `line_order` and `cand_order` index into the
    order arrays. Candidates are grouped by order and sorted by distance within an order.
    `cand_mask` has bit i set when the node can supply the order's line i (line_no == i).
    Node state arrays are indexed by node and describe the node at the start of the wave.
    """

    network: Network
    day: int
    order_time: np.ndarray
    decision_time: np.ndarray
    order_zone: np.ndarray
    order_tier: np.ndarray
    order_service: np.ndarray
    order_promised_day: np.ndarray
    order_n_lines: np.ndarray
    line_order: np.ndarray
    line_no: np.ndarray
    line_sku: np.ndarray
    line_qty: np.ndarray
    line_hazmat: np.ndarray
    cand_order: np.ndarray
    cand_node: np.ndarray
    cand_mask: np.ndarray
    cand_distance_km: np.ndarray
    node_capacity: np.ndarray
    node_assigned: np.ndarray
    node_backlog: np.ndarray
    node_expected_load: np.ndarray

    @property
    def n_orders(self) -> int:
        """Orders in the batch."""
        return len(self.order_zone)

    def ship_by_day(self, *, node: np.ndarray, decision_time: np.ndarray) -> np.ndarray:
        """The day (days since epoch) on which a node must hand the parcel to the carrier."""
        day = decision_time // SECONDS_PER_DAY
        hour = (decision_time % SECONDS_PER_DAY) / 3600.0
        after_cutoff = hour >= self.network.node_cutoff_hour[node]
        return day + self.network.node_handling_days[node] + after_cutoff.astype(np.int64)


@dataclass(frozen=True)
class Allocation:
    """A policy's answer: per line the node index (-1 = not fulfilled) and the carrier-service index."""

    line_node: np.ndarray
    line_service: np.ndarray


class RoutingPolicy(Protocol):
    """Anything that turns a decision batch into an allocation.

    A policy may also have `observe(shipments: pd.DataFrame)`: the twin then hands it each day's
    shipments (history rows, outcomes included) once the day is simulated, for it to learn from
    what becomes known.
    """

    def __call__(self, batch: DecisionBatch) -> Allocation:
        """Allocate every line of the batch."""
        ...


def choose_services(*, batch: DecisionBatch, ship_order: np.ndarray, ship_node: np.ndarray) -> np.ndarray:
    """Cheapest carrier-service meeting the promise per shipment; the fastest when none meets it."""
    network = batch.network
    zone = batch.order_zone[ship_order]
    band = network.band[zone, ship_node]
    region = network.zone_region[zone]
    transit = network.cs_transit[:, region, band].T  # shipments x services
    cost = network.cs_cost[:, region, band].T
    ship_by = batch.ship_by_day(node=ship_node, decision_time=batch.decision_time[ship_order])
    arrival = ship_by[:, None] + transit
    offered = transit >= 0
    meets = offered & (arrival <= batch.order_promised_day[ship_order][:, None])
    best_meeting = np.argmin(np.where(meets, cost, np.inf), axis=1)
    # Fallback ranks by arrival first, then cost, as one lexicographic key.
    fallback_key = np.where(offered, arrival * 1e6 + cost, np.inf)
    fastest = np.argmin(fallback_key, axis=1)
    return np.where(meets.any(axis=1), best_meeting, fastest)


def baseline_policy(batch: DecisionBatch) -> Allocation:
    """Nearest node that can ship the whole order, else nearest node per line; cheapest service meeting the promise."""
    n_lines = len(batch.line_order)
    full_mask = (1 << batch.order_n_lines) - 1
    complete = batch.cand_mask == full_mask[batch.cand_order]
    # Candidates are sorted by distance within an order, so the first complete one is the nearest.
    big = np.iinfo(np.int64).max
    cand_index = np.arange(len(batch.cand_order))
    first_complete = np.full(batch.n_orders, big, dtype=np.int64)
    np.minimum.at(first_complete, batch.cand_order[complete], cand_index[complete])
    single = first_complete < big

    line_node = np.full(n_lines, -1, dtype=np.int64)
    single_line = single[batch.line_order]
    line_node[single_line] = batch.cand_node[first_complete[batch.line_order[single_line]]]

    # Split orders: each line goes to the nearest candidate holding it.
    split_lines = np.flatnonzero(~single_line)
    if split_lines.size:
        first_holder = np.full(n_lines, big, dtype=np.int64)
        order_start = np.searchsorted(batch.cand_order, batch.line_order[split_lines], side="left")
        order_end = np.searchsorted(batch.cand_order, batch.line_order[split_lines], side="right")
        width = int((order_end - order_start).max(initial=0))
        for offset in range(width):
            pos = order_start + offset
            valid = pos < order_end
            pos = np.where(valid, pos, 0)
            holds = valid & ((batch.cand_mask[pos] >> batch.line_no[split_lines]) & 1).astype(bool)
            take = holds & (first_holder[split_lines] == big)
            first_holder[split_lines[take]] = pos[take]
        found = first_holder[split_lines] < big
        line_node[split_lines[found]] = batch.cand_node[first_holder[split_lines[found]]]

    line_service = np.full(n_lines, -1, dtype=np.int64)
    routed = line_node >= 0
    if routed.any():
        keys = batch.line_order[routed] * batch.network.n_nodes + line_node[routed]
        unique_keys, inverse = np.unique(keys, return_inverse=True)
        services = choose_services(
            batch=batch,
            ship_order=unique_keys // batch.network.n_nodes,
            ship_node=unique_keys % batch.network.n_nodes,
        )
        line_service[routed] = services[inverse]
    return Allocation(line_node=line_node, line_service=line_service)
