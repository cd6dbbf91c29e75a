"""The deterministic routing engine: least-cost eligible allocation, exact up to the split limit, with a trace.

For an order it prices every (candidate node, shipping option) for every set of lines the node
could ship, keeps the options every eligibility rule allows, and searches all ways to split the
order into at most `max_shipments` shipments on distinct nodes (exhaustively, by broadcasting over
nodes), so the answer is the true minimum. Risk comes in through a `RiskScorer`; the engine never
calls a model. Ties break on a stable key, so the same inputs always give the same decision.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from typing import NamedTuple, Protocol

import numpy as np

from rules.batch import OrderBatch, combined_late, partitions
from rules.errors import OrderError
from rules.schema import WEEKDAYS, Ruleset


@dataclass(frozen=True)
class OrderLine:
    """One line of an order."""

    line_id: str
    sku: str
    quantity: int = 1
    hazmat: bool = False
    group: str | None = None


@dataclass(frozen=True)
class Order:
    """An order to route, and what a re-route must avoid."""

    order_id: str
    lines: tuple[OrderLine, ...]
    dest_region: str
    tier: str
    promised_delivery: date
    decided_at: datetime
    excluded: tuple[tuple[str, str | None, str | None], ...] = ()


class ShippingOption(NamedTuple):
    """A carrier service a node can ship the order with, and when it would arrive (a named tuple, like
    `OptionTrace`: a request builds one per option)."""

    carrier: str
    service: str
    cost: float
    transit_days: int
    ship_by: datetime


@dataclass(frozen=True)
class Candidate:
    """A node that could ship (part of) the order."""

    node_id: str
    node_type: str
    region: str
    handling_cost: float
    available: dict[str, int]
    options: tuple[ShippingOption, ...]
    capacity: float | None = None
    assigned_today: float = 0.0
    distance_km: float | None = None


@dataclass(frozen=True)
class RiskQueries:
    """The (order, node, option) triples whose risk the engine needs, as columns."""

    decided_at: list[datetime]
    node_id: list[str]
    node_type: list[str]
    origin_region: list[str]
    dest_region: list[str]
    carrier: list[str]
    service: list[str]
    distance_km: list[float | None]
    ship_by: list[datetime]
    promised_delivery: list[date]

    def __len__(self) -> int:
        return len(self.node_id)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple]) -> RiskQueries:
        """Queries from one tuple per query in the fields' order, transposed in one pass."""
        names = [f.name for f in fields(cls)]
        columns = [list(column) for column in zip(*rows)] or [[] for _ in names]
        return cls(**dict(zip(names, columns, strict=True)))


@dataclass(frozen=True)
class RiskScores:
    """Per query: P(carrier delay), P(node congestion), and where they came from."""

    carrier_delay: np.ndarray
    node_congestion: np.ndarray
    degraded: np.ndarray
    notes: list[str] = field(default_factory=list)
    model_versions: dict[str, str] = field(default_factory=dict)
    # Per query, what the scorer has no history of (node, carrier, lane): its risk leans on network-wide rates.
    unknown: list[tuple[str, ...]] | None = None


class RiskScorer(Protocol):
    """Anything that prices the risk of candidate options (the models, or rules-only priors)."""

    def score(self, queries: RiskQueries) -> RiskScores:
        """Risk for every query."""
        ...


class PriorScorer:
    """Rules-only risk: fixed priors per carrier and per node type (what the engine uses without models)."""

    def __init__(
        self,
        *,
        carrier_delay: dict[str, float] | None = None,
        node_congestion: dict[str, float] | None = None,
        default_carrier_delay: float = 0.07,
        default_node_congestion: float = 0.08,
    ):
        self.carrier_delay = carrier_delay or {}
        self.node_congestion = node_congestion or {}
        self.default_carrier_delay = default_carrier_delay
        self.default_node_congestion = default_node_congestion

    def priors(self, *, carriers, node_types) -> tuple[np.ndarray, np.ndarray]:
        """P(carrier delay) per carrier and P(node congestion) per node type, element by element."""
        delay = np.array([self.carrier_delay.get(c, self.default_carrier_delay) for c in carriers], dtype=np.float64)
        congestion = np.array(
            [self.node_congestion.get(t, self.default_node_congestion) for t in node_types], dtype=np.float64
        )
        return delay, congestion

    def score(self, queries: RiskQueries) -> RiskScores:
        """The prior of each query's carrier and node type."""
        delay, congestion = self.priors(carriers=queries.carrier, node_types=queries.node_type)
        return RiskScores(carrier_delay=delay, node_congestion=congestion, degraded=np.zeros(len(queries), dtype=bool))


class OptionTrace(NamedTuple):
    """How one (node, option) fared: eligible or the rule that excluded it, and its price.

    A named tuple, not a dataclass: a decision builds one per option, and a tuple is the cheapest to build.
    """

    node_id: str
    carrier: str
    service: str
    lines: tuple[str, ...]
    eligible: bool
    excluded_by: str | None
    p_carrier_delay: float
    p_node_congestion: float
    p_late: float
    shipping: float
    handling: float
    late_penalty: float
    lane_adjustment: float
    total: float
    unknown: tuple[str, ...] = ()  # what the risk has no history of (see `RiskScores.unknown`)


@dataclass(frozen=True)
class Shipment:
    """One shipment of a decided allocation."""

    node_id: str
    carrier: str
    service: str
    lines: tuple[str, ...]
    ship_by: datetime
    arrival: date
    p_late: float
    cost: float


@dataclass(frozen=True)
class Allocation:
    """A whole-order allocation and its total cost (split penalty included)."""

    shipments: tuple[Shipment, ...]
    total: float


@dataclass(frozen=True)
class Decision:
    """The engine's answer for one order, with everything needed to explain and replay it."""

    order_id: str
    ruleset_name: str
    ruleset_hash: str
    chosen: Allocation | None
    runner_up: Allocation | None
    margin: float | None
    candidates: tuple[OptionTrace, ...]
    unroutable_reason: str | None
    degraded: bool
    notes: tuple[str, ...]


def _cap(*, ruleset: Ruleset, candidate: Candidate, weekday: int) -> float:
    """The daily shipment cap of a node on a weekday under the ruleset (inf when its capacity is unknown)."""
    rule = ruleset.eligibility.capacity
    by_day = rule.weekday_overrides.get(candidate.node_id)
    if by_day and WEEKDAYS[weekday] in by_day:
        return float(by_day[WEEKDAYS[weekday]])
    if candidate.node_id in rule.overrides:
        return float(rule.overrides[candidate.node_id])
    if candidate.capacity is None:
        return math.inf
    return math.floor(rule.default_share * candidate.capacity)


def _option_rule(
    *, ruleset: Ruleset, order: Order, candidate: Candidate, option: ShippingOption, load: float, p_late: float
) -> str | None:
    """The first rule that forbids this node and option for this order, whatever lines it carries."""
    return _option_rules(
        ruleset=ruleset, order=order, rows=[(candidate, option)], loads={candidate.node_id: load}, p_late=[p_late]
    )[0]


def _option_rules(
    *,
    ruleset: Ruleset,
    order: Order,
    rows: Sequence[tuple[Candidate, ShippingOption]],
    loads: Mapping[str, float],
    p_late: Sequence[float],
) -> list[str | None]:
    """For each (node, option) row, the first rule that forbids it for this order whatever lines it carries
    (None: allowed); `loads` is each node's shipments today so far.

    The rules are tried in the ruleset's order of precedence. Those about a node alone, a node type and
    service, or a carrier's service on the order's lane are each worked out once per order and key: an
    order's options share them.
    """
    e = ruleset.eligibility
    weekday = order.decided_at.weekday()
    limit = e.max_risk_by_tier.get(order.tier)

    @functools.cache
    def node_type_rule(node_type: str, service: str) -> str | None:
        for rule in e.node_types:
            if (
                rule.node_type == node_type
                and (rule.services is None or service in rule.services)
                and (rule.tiers is None or order.tier in rule.tiers)
            ):
                return rule.id
        return None

    @functools.cache
    def region_rule(node_id: str, node_type: str) -> str | None:
        for rule in e.regions:
            if order.dest_region in rule.dest_regions and (
                (rule.node_ids is not None and node_id in rule.node_ids)
                or (rule.node_types is not None and node_type in rule.node_types)
            ):
                return rule.id
        return None

    @functools.cache
    def lane_rule(carrier: str, service: str) -> str | None:
        for rule in e.lanes:
            if (
                rule.carrier == carrier
                and (rule.dest_regions is None or order.dest_region in rule.dest_regions)
                and (rule.tiers is None or order.tier in rule.tiers)
                and (rule.services is None or service in rule.services)
            ):
                return rule.id
        return None

    @functools.cache
    def arrives_late(ship_by: datetime, transit_days: int) -> bool:
        return ship_by.date() + timedelta(days=transit_days) > order.promised_delivery

    def capacity_rule(candidate: Candidate) -> str | None:
        full = loads[candidate.node_id] + 1 > _cap(ruleset=ruleset, candidate=candidate, weekday=weekday)
        return e.capacity.id if full else None

    nodes = {candidate.node_id: candidate for candidate, _ in rows}
    capacity = {node_id: capacity_rule(candidate) for node_id, candidate in nodes.items()}
    too_risky = f"max_risk_{order.tier}"
    found: list[str | None] = []
    for (candidate, option), late in zip(rows, p_late):
        rule = None
        if order.excluded and any(
            node == candidate.node_id and carrier in (None, option.carrier) and service in (None, option.service)
            for node, carrier, service in order.excluded
        ):
            rule = "reroute_excluded"
        elif arrives_late(option.ship_by, option.transit_days):
            rule = "promise_not_met"
        found.append(
            rule
            or node_type_rule(candidate.node_type, option.service)
            or region_rule(candidate.node_id, candidate.node_type)
            or lane_rule(option.carrier, option.service)
            or capacity[candidate.node_id]
            or (too_risky if limit is not None and late > limit else None)
        )
    return found


def _lane_adjustment(*, ruleset: Ruleset, carrier: str, dest_region: str) -> float:
    """Sum of lane adjustments that apply to a carrier on the destination region."""
    return sum(
        a.amount
        for a in ruleset.scoring.lane_adjustments
        if a.carrier == carrier and (a.dest_regions is None or dest_region in a.dest_regions)
    )


def risk_queries(*, orders: Sequence[Order], candidates: Sequence[Sequence[Candidate]]) -> tuple[RiskQueries, list]:
    """Every (order, candidate, option) whose risk is needed, and where each order's slice starts."""
    index = [
        [(candidate, option) for candidate in options_of for option in candidate.options] for options_of in candidates
    ]
    queries = RiskQueries.from_rows(
        (
            order.decided_at,
            candidate.node_id,
            candidate.node_type,
            candidate.region,
            order.dest_region,
            option.carrier,
            option.service,
            candidate.distance_km,
            option.ship_by,
            order.promised_delivery,
        )
        for order, rows in zip(orders, index)
        for candidate, option in rows
    )
    return queries, index


def _units(order: Order) -> list[tuple[OrderLine, ...]]:
    """The order's lines as indivisible units: an item group, or a line on its own."""
    if not order.lines:
        raise OrderError(f"order {order.order_id}: no lines")
    groups: dict[str, list[OrderLine]] = {}
    units: list[tuple[OrderLine, ...]] = []
    for line in order.lines:
        if line.group is None:
            units.append((line,))
        else:
            groups.setdefault(line.group, []).append(line)
    units.extend(tuple(g) for _, g in sorted(groups.items()))
    return units


def decide(
    *,
    order: Order,
    candidates: Sequence[Candidate],
    ruleset: Ruleset,
    scores: RiskScores,
    rows: list,
    offset: int = 0,
    extra_load: dict[str, float] | None = None,
) -> Decision:
    """Decide one order from its candidates and the risk of each (candidate, option) row."""
    extra_load = extra_load or {}
    units = _units(order)
    if len(units) > 12:
        raise OrderError(f"order {order.order_id}: {len(units)} units is more than the engine routes exactly (12)")
    max_blocks = ruleset.split.max_shipments if ruleset.split.allow_split else 1
    n_units = len(units)
    n_subsets = 1 << n_units
    if len({c.node_id for c in candidates}) != len(candidates):
        raise OrderError(f"order {order.order_id}: a node appears twice among the candidates")
    penalty = ruleset.scoring.late_penalty_by_tier.get(order.tier, 0.0)
    ordered = sorted(candidates, key=lambda c: c.node_id)
    by_node = {c.node_id: i for i, c in enumerate(ordered)}
    n_rows = len(rows)
    chunk = slice(offset, offset + n_rows)
    p_carrier = np.asarray(scores.carrier_delay[chunk], dtype=np.float64)
    p_congestion = np.asarray(scores.node_congestion[chunk], dtype=np.float64)
    p_late = combined_late(p_carrier, p_congestion)
    loads = {c.node_id: c.assigned_today + extra_load.get(c.node_id, 0.0) for c in ordered}
    late_risks = p_late.tolist()  # plain floats: the rules and the trace read them one by one
    option_rules = _option_rules(ruleset=ruleset, order=order, rows=rows, loads=loads, p_late=late_risks)
    lanes = {
        carrier: _lane_adjustment(ruleset=ruleset, carrier=carrier, dest_region=order.dest_region)
        for carrier in {o.carrier for _, o in rows}
    }
    lane = np.array([lanes[o.carrier] for _, o in rows], dtype=np.float64)
    # Per subset of units (bitmask s): its lines, unit count and whether it carries hazmat.
    subset_lines = [tuple(line for u in range(n_units) if s >> u & 1 for line in units[u]) for s in range(n_subsets)]
    subset_units = np.array([sum(line.quantity for line in lines) for lines in subset_lines], dtype=np.float64)
    subset_hazmat = np.array([any(line.hazmat for line in lines) for lines in subset_lines])
    # Per node: the units it can ship whole, as a bitmask.
    supply = np.array(
        [
            sum(
                1 << u
                for u in range(n_units)
                if all(c.available.get(line.line_id, 0) >= line.quantity for line in units[u])
            )
            for c in ordered
        ],
        dtype=np.int64,
    )
    node_of_row = np.array([by_node[c.node_id] for c, _ in rows], dtype=np.int64)
    hazmat = ruleset.eligibility.hazmat
    hazmat_blocked = np.array(
        [c.node_type not in hazmat.allowed_node_types or o.service in hazmat.forbidden_services for c, o in rows],
        dtype=bool,
    )
    cost = np.array([o.cost for _, o in rows], dtype=np.float64)
    handling_cost = np.array([c.handling_cost for c, _ in rows], dtype=np.float64)
    subsets = np.arange(n_subsets, dtype=np.int64)
    # [row, subset] arrays: the price of shipping that subset with that row's node and option.
    handling = handling_cost[:, None] * (1 + ruleset.scoring.handling_per_extra_unit * (subset_units[None, :] - 1))
    total = cost[:, None] + handling + (penalty * p_late + lane)[:, None]
    stocked = (subsets[None, :] & ~supply[node_of_row][:, None]) == 0
    hazmat_bad = subset_hazmat[None, :] & hazmat_blocked[:, None]
    option_ok = np.array([rule is None for rule in option_rules], dtype=bool)
    eligible = option_ok[:, None] & stocked & ~hazmat_bad
    eligible[:, 0] = False
    best, pick, late = _cheapest_per_node(
        eligible=eligible, total=total, node_of_row=node_of_row, n_nodes=len(ordered), rows=rows, p_late=p_late
    )
    # The trace reads plain Python values: indexing numpy arrays element by element costs more than the rest.
    row_supply = supply[node_of_row].tolist()
    subset_line_ids = [tuple(line.line_id for line in lines) for lines in subset_lines]
    handling_of, total_of, hazmat_of = handling.tolist(), total.tolist(), hazmat_bad.tolist()
    unknown = scores.unknown[chunk] if scores.unknown is not None else [()] * n_rows
    risks = zip(
        p_carrier.tolist(), p_congestion.tolist(), late_risks, (penalty * p_late).tolist(), lane.tolist(), unknown
    )
    traces = []
    for r, ((candidate, option), (carrier_delay, congestion, late_risk, late_cost, lane_cost, lacking)) in enumerate(
        zip(rows, risks)
    ):
        full = row_supply[r]
        if full == 0:
            rule, lines, row_handling, row_total = "inventory", (), candidate.handling_cost, math.inf
        else:
            rule = option_rules[r] or (hazmat.id if hazmat_of[r][full] else None)
            lines, row_handling, row_total = subset_line_ids[full], handling_of[r][full], total_of[r][full]
        traces.append(
            OptionTrace(
                node_id=candidate.node_id,
                carrier=option.carrier,
                service=option.service,
                lines=lines,
                eligible=rule is None,
                excluded_by=rule,
                p_carrier_delay=carrier_delay,
                p_node_congestion=congestion,
                p_late=late_risk,
                shipping=option.cost,
                handling=row_handling,
                late_penalty=late_cost,
                lane_adjustment=lane_cost,
                total=row_total,
                unknown=lacking,
            )
        )
    ranked = _search(
        best=best,
        n_units=n_units,
        max_blocks=max_blocks,
        split_penalty=ruleset.scoring.split_penalty,
        nodes=[c.node_id for c in ordered],
    )
    allocations = [
        _allocation(units=units, rows=rows, pick=pick, best=best, late=late, plan=plan, total=total)
        for total, plan in ranked[:2]
    ]
    chosen = allocations[0] if allocations else None
    runner_up = allocations[1] if len(allocations) > 1 else None
    reason = None
    if chosen is None:
        uncovered = [
            "+".join(line.line_id for line in units[u])
            for u in range(n_units)
            if not np.isfinite(best[:, [s for s in range(n_subsets) if s >> u & 1]]).any()
        ]
        reason = (
            f"no eligible candidate ships line(s) {', '.join(uncovered)}"
            if uncovered
            else f"no allocation within {max_blocks} shipment(s) passes every rule"
        )
    degraded_rows = scores.degraded[offset : offset + len(rows)]
    return Decision(
        order_id=order.order_id,
        ruleset_name=ruleset.name,
        ruleset_hash=ruleset.content_hash(),
        chosen=chosen,
        runner_up=runner_up,
        margin=(runner_up.total - chosen.total) if chosen and runner_up else None,
        candidates=tuple(sorted(traces, key=lambda t: (t.node_id, t.carrier, t.service))),
        unroutable_reason=reason,
        degraded=bool(np.any(degraded_rows)),
        notes=tuple(scores.notes),
    )


def _cheapest_per_node(
    *, eligible: np.ndarray, total: np.ndarray, node_of_row: np.ndarray, n_nodes: int, rows: list, p_late: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """best[n, s]: cheapest eligible price of subset s from node n (inf if none); pick: its row; late: its P(late).

    Ties on price go to the smaller (carrier, service), then to the earlier row: a stable key.
    """
    n_subsets = total.shape[1]
    best = np.full((n_nodes, n_subsets), np.inf)
    pick = np.full((n_nodes, n_subsets), -1, dtype=np.int64)
    late = np.zeros((n_nodes, n_subsets))
    row, subset = np.nonzero(eligible)
    if row.size == 0:
        return best, pick, late
    names = sorted({(o.carrier, o.service) for _, o in rows})
    rank = {name: i for i, name in enumerate(names)}
    tiebreak = np.array([rank[(o.carrier, o.service)] for _, o in rows], dtype=np.int64)
    node = node_of_row[row]
    order = np.lexsort((row, tiebreak[row], total[row, subset], subset, node))
    node, subset, row = node[order], subset[order], row[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (node[1:] != node[:-1]) | (subset[1:] != subset[:-1])
    node, subset, row = node[first], subset[first], row[first]
    best[node, subset] = total[row, subset]
    pick[node, subset] = row
    late[node, subset] = p_late[row]
    return best, pick, late


def _search(
    *, best: np.ndarray, n_units: int, max_blocks: int, split_penalty: float, nodes: list[str]
) -> list[tuple[float, tuple[tuple[int, int], ...]]]:
    """All finite allocations (subset -> node, distinct nodes), cheapest first, ties by node ids."""
    found: list[tuple[float, tuple[str, ...], tuple[tuple[int, int], ...]]] = []
    n_nodes = best.shape[0]
    if n_nodes == 0:
        return []
    for masks in partitions(n_units, max_blocks):
        k = len(masks)
        grid = np.zeros((n_nodes,) * k)
        for b, mask in enumerate(masks):
            shape = [1] * k
            shape[b] = n_nodes
            grid = grid + best[:, mask].reshape(shape)
        # Two shipments of one order from one node would be one shipment: forbid repeats.
        for a, b in itertools.combinations(range(k), 2):
            same = [slice(None)] * k
            same[a] = same[b] = np.arange(n_nodes)
            grid[tuple(same)] = np.inf
        totals = grid.ravel() + split_penalty * (k - 1)
        totals[~np.isfinite(totals)] = np.inf
        # The two cheapest, ties to the lower index (node ids in order): argmin finds the first minimum.
        for _ in range(2):
            i = int(totals.argmin())
            if totals[i] == np.inf:
                break
            plan = tuple((int(n), mask) for n, mask in zip(np.unravel_index(i, grid.shape), masks))
            key = tuple(sorted(nodes[n] for n, _ in plan))
            found.append((float(totals[i]), key, plan))
            totals[i] = np.inf
    found.sort(key=lambda item: (round(item[0], 9), item[1], item[2]))
    return [(total, plan) for total, _, plan in found]


def _allocation(*, units, rows, pick, best, late, plan, total) -> Allocation:
    """The shipments of one search result."""
    shipments = []
    for node, mask in sorted(plan, key=lambda p: p[1]):
        candidate, option = rows[pick[node, mask]]
        lines = tuple(line.line_id for u in range(len(units)) if mask >> u & 1 for line in units[u])
        shipments.append(
            Shipment(
                node_id=candidate.node_id,
                carrier=option.carrier,
                service=option.service,
                lines=lines,
                ship_by=option.ship_by,
                arrival=option.ship_by.date() + timedelta(days=option.transit_days),
                p_late=float(late[node, mask]),
                cost=float(best[node, mask]),
            )
        )
    return Allocation(shipments=tuple(shipments), total=float(total))


def decide_batch(
    *,
    orders: Sequence[Order],
    candidates: Sequence[Sequence[Candidate]],
    ruleset: Ruleset,
    scorer: RiskScorer,
) -> list[Decision]:
    """Decide many orders with one risk-scoring call; each decision counts toward the next one's node load."""
    if len(orders) != len(candidates):
        raise OrderError(f"{len(orders)} orders but {len(candidates)} candidate lists")
    ordered_candidates = [sorted(c, key=lambda c: c.node_id) for c in candidates]
    queries, index = risk_queries(orders=orders, candidates=ordered_candidates)
    scores = scorer.score(queries) if len(queries) else RiskScores(np.array([]), np.array([]), np.array([], bool))
    decisions = []
    offset = 0
    extra_load: dict[str, float] = {}
    for order, options_of, rows in zip(orders, ordered_candidates, index):
        decision = decide(
            order=order,
            candidates=options_of,
            ruleset=ruleset,
            scores=scores,
            rows=rows,
            offset=offset,
            extra_load=extra_load,
        )
        offset += len(rows)
        if decision.chosen is not None:
            for shipment in decision.chosen.shipments:
                extra_load[shipment.node_id] = extra_load.get(shipment.node_id, 0.0) + 1.0
        decisions.append(decision)
    return decisions


EPOCH_DAY = np.datetime64("1970-01-01", "D")


def _day(value) -> int:
    """A date or datetime as days since 1970-01-01."""
    return int((np.datetime64(value, "D") - EPOCH_DAY).astype(np.int64))


def to_columns(
    *,
    orders: Sequence[Order],
    candidates: Sequence[Sequence[Candidate]],
) -> OrderBatch:
    """Orders and their candidates (objects, as the live API builds them) as one batch for `rules.batch`.

    Candidates must be sorted by node id within each order.
    """
    n = len(orders)
    units = [_units(order) for order in orders]
    max_units = max((len(u) for u in units), default=1)
    quantity = np.zeros((n, max_units), dtype=np.int64)
    hazmat = np.zeros((n, max_units), dtype=bool)
    for o, order_units in enumerate(units):
        for u, unit in enumerate(order_units):
            quantity[o, u] = sum(line.quantity for line in unit)
            hazmat[o, u] = any(line.hazmat for line in unit)
    cand_columns: dict[str, list] = {
        k: [] for k in ("order", "node", "type", "handling", "supply", "capacity", "assigned")
    }
    opt_columns: dict[str, list] = {
        k: [] for k in ("cand", "carrier", "service", "cost", "transit", "ship_by", "excluded")
    }
    for o, (order, options_of) in enumerate(zip(orders, candidates)):
        for candidate in options_of:
            c = len(cand_columns["order"])
            supply = sum(
                1 << u
                for u, unit in enumerate(units[o])
                if all(candidate.available.get(line.line_id, 0) >= line.quantity for line in unit)
            )
            for key, value in (
                ("order", o),
                ("node", candidate.node_id),
                ("type", candidate.node_type),
                ("handling", candidate.handling_cost),
                ("supply", supply),
                ("capacity", np.nan if candidate.capacity is None else candidate.capacity),
                ("assigned", candidate.assigned_today),
            ):
                cand_columns[key].append(value)
            for option in candidate.options:
                excluded = any(
                    node == candidate.node_id
                    and carrier in (None, option.carrier)
                    and service in (None, option.service)
                    for node, carrier, service in order.excluded
                )
                for key, value in (
                    ("cand", c),
                    ("carrier", option.carrier),
                    ("service", option.service),
                    ("cost", option.cost),
                    ("transit", option.transit_days),
                    ("ship_by", _day(option.ship_by)),
                    ("excluded", excluded),
                ):
                    opt_columns[key].append(value)
    return OrderBatch(
        order_tier=np.array([o.tier for o in orders], dtype=object),
        order_dest_region=np.array([o.dest_region for o in orders], dtype=object),
        order_promised_day=np.array([_day(o.promised_delivery) for o in orders], dtype=np.int64),
        order_n_units=np.array([len(u) for u in units], dtype=np.int64),
        unit_quantity=quantity,
        unit_hazmat=hazmat,
        cand_order=np.array(cand_columns["order"], dtype=np.int64),
        cand_node=np.array(cand_columns["node"], dtype=object),
        cand_node_type=np.array(cand_columns["type"], dtype=object),
        cand_handling_cost=np.array(cand_columns["handling"], dtype=np.float64),
        cand_supply=np.array(cand_columns["supply"], dtype=np.int64),
        cand_capacity=np.array(cand_columns["capacity"], dtype=np.float64),
        cand_assigned=np.array(cand_columns["assigned"], dtype=np.float64),
        opt_cand=np.array(opt_columns["cand"], dtype=np.int64),
        opt_carrier=np.array(opt_columns["carrier"], dtype=object),
        opt_service=np.array(opt_columns["service"], dtype=object),
        opt_cost=np.array(opt_columns["cost"], dtype=np.float64),
        opt_transit_days=np.array(opt_columns["transit"], dtype=np.int64),
        opt_ship_by_day=np.array(opt_columns["ship_by"], dtype=np.int64),
        opt_excluded=np.array(opt_columns["excluded"], dtype=bool),
        order_weekday=np.array([o.decided_at.weekday() for o in orders], dtype=np.int64),
    )
