"""The engine on columns: many orders decided at once, for replays of history and runs of the twin.

Orders, their candidate nodes and each node's shipping options come as parallel arrays
(`OrderBatch`), risk as arrays aligned with the options. Orders with the same number of units
are decided together: every (option, unit subset) is priced and checked at once, the cheapest
eligible option per (node, subset) is kept, and every split of the units into at most
`max_shipments` blocks is searched over each block's cheapest nodes — exactly, because an optimal
assignment of k blocks to distinct nodes only ever needs each block's k cheapest nodes (k + 1 for
the runner-up). Capacity caps make orders depend on the ones before them; the batch is decided
optimistically, the first order that meets a full node is found, and the rest is decided again
with that node's load: the same answer as deciding one order after another.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rules.schema import WEEKDAYS, Ruleset

NO_RULE = -1


@dataclass(frozen=True)
class OrderBatch:
    """Orders, candidate nodes and shipping options as parallel arrays.

    Units are an order's indivisible parts (a line, or an item group); `unit_quantity` and
    `unit_hazmat` are (orders x max units), padded. Candidates are grouped by order and sorted by
    node id within it; options are grouped by candidate. `cand_supply` has bit u set when the
    node holds all of unit u. Days are days since 1970-01-01; times are epoch seconds.
    """

    order_tier: np.ndarray
    order_dest_region: np.ndarray
    order_promised_day: np.ndarray
    order_n_units: np.ndarray
    unit_quantity: np.ndarray
    unit_hazmat: np.ndarray
    cand_order: np.ndarray
    cand_node: np.ndarray
    cand_node_type: np.ndarray
    cand_handling_cost: np.ndarray
    cand_supply: np.ndarray
    cand_capacity: np.ndarray
    cand_assigned: np.ndarray
    opt_cand: np.ndarray
    opt_carrier: np.ndarray
    opt_service: np.ndarray
    opt_cost: np.ndarray
    opt_transit_days: np.ndarray
    opt_ship_by_day: np.ndarray
    opt_excluded: np.ndarray
    # The weekday each order is decided on (0 = Monday), for weekday capacity caps; None when unknown.
    order_weekday: np.ndarray | None = None

    @property
    def n_orders(self) -> int:
        """Orders in the batch."""
        return len(self.order_tier)


@dataclass(frozen=True)
class BatchDecisions:
    """Per order: the chosen and runner-up plans (options and unit masks per shipment) and their totals.

    `chosen_option` and `chosen_mask` are (orders x max shipments), -1 where unused; an order with
    no eligible allocation has total inf. `option_rule` names, per option, the first rule that
    excludes it whatever it carries (an index into `rule_names`, or -1), under the loads it was decided with.
    """

    chosen_option: np.ndarray
    chosen_mask: np.ndarray
    chosen_total: np.ndarray
    runner_up_option: np.ndarray
    runner_up_mask: np.ndarray
    runner_up_total: np.ndarray
    option_rule: np.ndarray
    option_p_late: np.ndarray
    option_total_alone: np.ndarray
    rule_names: tuple[str, ...]


def combined_late(p_carrier: np.ndarray, p_congestion: np.ndarray) -> np.ndarray:
    """P(late) when either the node hands over late or the carrier delivers late."""
    return 1.0 - (1.0 - p_carrier) * (1.0 - p_congestion)


@functools.cache  # every order of the same size asks again
def partitions(n: int, max_blocks: int) -> tuple[tuple[int, ...], ...]:
    """Set partitions of n units into at most max_blocks blocks, as block bitmasks (restricted growth strings)."""
    found = []

    def grow(i: int, labels: list[int], blocks: int) -> None:
        if i == n:
            masks = [0] * blocks
            for unit, label in enumerate(labels):
                masks[label] |= 1 << unit
            found.append(tuple(masks))
            return
        for label in range(min(blocks + 1, max_blocks)):
            grow(i + 1, labels + [label], max(blocks, label + 1))

    grow(0, [], 0)
    return tuple(found)


def weekday_of(seconds: np.ndarray) -> np.ndarray:
    """The weekday (0 = Monday) of epoch seconds (1970-01-01 was a Thursday)."""
    return (np.asarray(seconds, dtype=np.int64) // 86_400 + 3) % 7


def caps(*, ruleset: Ruleset, node: np.ndarray, capacity: np.ndarray, weekday: np.ndarray | None = None) -> np.ndarray:
    """Each candidate's daily shipment cap: its weekday's override, its override, a share of capacity, or inf."""
    rule = ruleset.eligibility.capacity
    cap = np.where(np.isnan(capacity), np.inf, np.floor(rule.default_share * np.nan_to_num(capacity)))
    if rule.overrides:
        overrides = np.array([float(rule.overrides.get(n, np.nan)) for n in node])
        cap = np.where(np.isnan(overrides), cap, overrides)
    if rule.weekday_overrides and weekday is not None:
        for name, by_day in rule.weekday_overrides.items():
            for day, value in by_day.items():
                cap = np.where((node == name) & (weekday == WEEKDAYS.index(day)), float(value), cap)
    return cap


def static_rules(*, batch: OrderBatch, ruleset: Ruleset, names: list[str]) -> np.ndarray:
    """Per option, the first rule before the capacity cap that excludes it (index into names, or -1)."""
    e = ruleset.eligibility
    n = len(batch.opt_cand)
    order = batch.cand_order[batch.opt_cand]
    node_type = batch.cand_node_type[batch.opt_cand]
    node = batch.cand_node[batch.opt_cand]
    tier = batch.order_tier[order]
    dest = batch.order_dest_region[order]
    checks: list[tuple[str, np.ndarray]] = [
        ("reroute_excluded", batch.opt_excluded.astype(bool)),
        ("promise_not_met", batch.opt_ship_by_day + batch.opt_transit_days > batch.order_promised_day[order]),
    ]
    for rule in e.node_types:
        hit = node_type == rule.node_type
        if rule.services is not None:
            hit &= np.isin(batch.opt_service, rule.services)
        if rule.tiers is not None:
            hit &= np.isin(tier, rule.tiers)
        checks.append((rule.id, hit))
    for rule in e.regions:
        by_node = np.isin(node, rule.node_ids) if rule.node_ids is not None else np.zeros(n, dtype=bool)
        by_type = np.isin(node_type, rule.node_types) if rule.node_types is not None else np.zeros(n, dtype=bool)
        checks.append((rule.id, np.isin(dest, rule.dest_regions) & (by_node | by_type)))
    for rule in e.lanes:
        hit = batch.opt_carrier == rule.carrier
        if rule.dest_regions is not None:
            hit &= np.isin(dest, rule.dest_regions)
        if rule.tiers is not None:
            hit &= np.isin(tier, rule.tiers)
        if rule.services is not None:
            hit &= np.isin(batch.opt_service, rule.services)
        checks.append((rule.id, hit))
    first = np.full(n, NO_RULE, dtype=np.int64)
    for name, hit in reversed(checks):
        if name not in names:
            names.append(name)
        first = np.where(hit, names.index(name), first)
    return first


def lane_adjustments(*, batch: OrderBatch, ruleset: Ruleset) -> np.ndarray:
    """Per option, the lane adjustments that apply to its carrier on the order's destination."""
    total = np.zeros(len(batch.opt_cand))
    dest = batch.order_dest_region[batch.cand_order[batch.opt_cand]]
    for a in ruleset.scoring.lane_adjustments:
        hit = batch.opt_carrier == a.carrier
        if a.dest_regions is not None:
            hit &= np.isin(dest, a.dest_regions)
        total += np.where(hit, a.amount, 0.0)
    return total


def decide_orders(
    *,
    batch: OrderBatch,
    ruleset: Ruleset,
    p_carrier: np.ndarray,
    p_congestion: np.ndarray,
    order_wave: np.ndarray | None = None,
) -> BatchDecisions:
    """Decide every order of the batch in sequence order, exactly, as one order after another would be.

    `order_wave` (non-decreasing) splits the batch into decision waves: a wave's decisions load its
    nodes for the rest of that wave only (the next wave's `cand_assigned` already says where it stands).
    """
    max_blocks = ruleset.split.max_shipments if ruleset.split.allow_split else 1
    names: list[str] = []
    static = static_rules(batch=batch, ruleset=ruleset, names=names)
    names.append(ruleset.eligibility.capacity.id)
    capacity_code = len(names) - 1
    p_late = combined_late(np.asarray(p_carrier, float), np.asarray(p_congestion, float))
    limits = ruleset.eligibility.max_risk_by_tier
    order_of_option = batch.cand_order[batch.opt_cand]
    # Tier lookups once per order, spread to its options (there are far more options than orders).
    tier_code, tiers = pd.factorize(batch.order_tier.astype(str), sort=True)
    option_tier = tier_code[order_of_option]
    limit = np.array([limits.get(t, np.inf) for t in tiers], dtype=np.float64)[option_tier]
    risky = p_late > limit
    risk_code = np.full(len(p_late), NO_RULE, dtype=np.int64)
    for i, tier in enumerate(tiers):
        names.append(f"max_risk_{tier}")
        risk_code[option_tier == i] = len(names) - 1
    penalty = np.array([ruleset.scoring.late_penalty_by_tier.get(t, 0.0) for t in tiers], dtype=np.float64)[option_tier]
    base_price = batch.opt_cost + penalty * p_late + lane_adjustments(batch=batch, ruleset=ruleset)
    cap = caps(
        ruleset=ruleset,
        node=batch.cand_node,
        capacity=batch.cand_capacity,
        weekday=None if batch.order_weekday is None else batch.order_weekday[batch.cand_order],
    )
    hazmat = ruleset.eligibility.hazmat
    hazmat_blocked = ~np.isin(batch.cand_node_type[batch.opt_cand], hazmat.allowed_node_types) | np.isin(
        batch.opt_service, hazmat.forbidden_services
    )
    # Ties on price go to the smaller (carrier, service): their rank, computed once for the batch.
    carrier_code = pd.factorize(batch.opt_carrier, sort=True)[0]
    service_code = pd.factorize(batch.opt_service, sort=True)[0]
    tiebreak = carrier_code.astype(np.int64) * (int(service_code.max(initial=0)) + 1) + service_code

    n_orders = batch.n_orders
    out_option = np.full((n_orders, max_blocks), -1, dtype=np.int64)
    out_mask = np.full((n_orders, max_blocks), -1, dtype=np.int64)
    out_total = np.full(n_orders, np.inf)
    run_option = np.full((n_orders, max_blocks), -1, dtype=np.int64)
    run_mask = np.full((n_orders, max_blocks), -1, dtype=np.int64)
    run_total = np.full(n_orders, np.inf)
    option_rule = np.full(len(p_late), NO_RULE, dtype=np.int64)

    # Loads this batch's own decisions add, per (wave, node).
    wave = np.zeros(n_orders, dtype=np.int64) if order_wave is None else np.asarray(order_wave, dtype=np.int64)
    node_code = pd.factorize(batch.cand_node)[0].astype(np.int64)
    _, cand_load_code = np.unique(
        wave[batch.cand_order] * (node_code.max(initial=0) + 1) + node_code, return_inverse=True
    )
    extra = np.zeros(cand_load_code.max(initial=-1) + 1)
    open_orders = np.ones(n_orders, dtype=bool)
    while open_orders.any():
        load = batch.cand_assigned + extra[cand_load_code]
        full = load + 1 > cap
        rule = np.where(
            static != NO_RULE,
            static,
            np.where(full[batch.opt_cand], capacity_code, np.where(risky, risk_code, NO_RULE)),
        )
        todo = np.flatnonzero(open_orders)
        chosen = _solve(
            batch=batch,
            orders=todo,
            rule=rule,
            base_price=base_price,
            tiebreak=tiebreak,
            option_order=order_of_option,
            hazmat_blocked=hazmat_blocked,
            ruleset=ruleset,
            max_blocks=max_blocks,
            out=(out_option, out_mask, out_total, run_option, run_mask, run_total),
        )
        # In each wave, redo from the first order whose candidates' cap status earlier shipments changed.
        stale = _first_stale(
            batch=batch,
            open_orders=open_orders,
            wave=wave,
            chosen=chosen,
            cap=cap,
            extra=extra,
            load_code=cand_load_code,
        )
        decided = todo[todo < stale[wave[todo]]]
        in_decided = np.zeros(n_orders, dtype=bool)
        in_decided[decided] = True
        option_rule[in_decided[order_of_option]] = rule[in_decided[order_of_option]]
        shipped = out_option[decided][out_option[decided] >= 0]
        np.add.at(extra, cand_load_code[batch.opt_cand[shipped]], 1.0)
        open_orders[decided] = False
    single_total = base_price + batch.cand_handling_cost[batch.opt_cand]
    return BatchDecisions(
        chosen_option=out_option,
        chosen_mask=out_mask,
        chosen_total=out_total,
        runner_up_option=run_option,
        runner_up_mask=run_mask,
        runner_up_total=run_total,
        option_rule=option_rule,
        option_p_late=p_late,
        option_total_alone=single_total,
        rule_names=tuple(names),
    )


def _first_stale(
    *,
    batch: OrderBatch,
    open_orders: np.ndarray,
    wave: np.ndarray,
    chosen: np.ndarray,
    cap: np.ndarray,
    extra: np.ndarray,
    load_code: np.ndarray,
) -> np.ndarray:
    """Per wave, the first open order decided with a node's cap status that its wave's earlier open orders changed.

    Orders before it in its wave saw exactly the loads one-after-another deciding would have shown
    them; waves with no such order map to one past the last order.
    """
    n = batch.n_orders
    stale = np.full(wave.max(initial=0) + 1, n, dtype=np.int64)
    rows = chosen[open_orders]
    used = rows >= 0
    if not used.any():
        return stale
    big = np.int64(n + 1)
    ship_order = np.repeat(np.flatnonzero(open_orders), rows.shape[1])[used.ravel()]
    shipped = np.sort(load_code[batch.opt_cand[rows[used]]].astype(np.int64) * big + ship_order)
    cands = np.flatnonzero(open_orders[batch.cand_order])
    code, order = load_code[cands].astype(np.int64), batch.cand_order[cands]
    before = np.searchsorted(shipped, code * big + order) - np.searchsorted(shipped, code * big)
    seen = batch.cand_assigned[cands] + extra[code]
    flipped = (seen + 1 > cap[cands]) != (seen + before + 1 > cap[cands])
    np.minimum.at(stale, wave[order[flipped]], order[flipped])
    return stale


def _solve(
    *,
    batch: OrderBatch,
    orders: np.ndarray,
    rule: np.ndarray,
    base_price: np.ndarray,
    tiebreak: np.ndarray,
    option_order: np.ndarray,
    hazmat_blocked: np.ndarray,
    ruleset: Ruleset,
    max_blocks: int,
    out: tuple[np.ndarray, ...],
) -> np.ndarray:
    """Decide `orders` with the given option rules; fills `out` and returns the chosen options (orders x blocks)."""
    out_option, out_mask, out_total, run_option, run_mask, run_total = out
    n_units = batch.order_n_units[orders]
    for n in np.unique(n_units):
        group = orders[n_units == n]
        _solve_group(
            batch=batch,
            orders=group,
            n=int(n),
            rule=rule,
            base_price=base_price,
            tiebreak=tiebreak,
            option_order=option_order,
            hazmat_blocked=hazmat_blocked,
            ruleset=ruleset,
            max_blocks=max_blocks,
            out=out,
        )
    return out_option


def _solve_group(
    *,
    batch: OrderBatch,
    orders: np.ndarray,
    n: int,
    rule: np.ndarray,
    base_price: np.ndarray,
    tiebreak: np.ndarray,
    option_order: np.ndarray,
    hazmat_blocked: np.ndarray,
    ruleset: Ruleset,
    max_blocks: int,
    out: tuple[np.ndarray, ...],
) -> None:
    """Orders with n units: price every (option, subset), keep the cheapest per (node, subset), search splits."""
    out_option, out_mask, out_total, run_option, run_mask, run_total = out
    n_subsets = 1 << n
    in_group = np.zeros(batch.n_orders, dtype=bool)
    in_group[orders] = True
    cands = np.flatnonzero(in_group[batch.cand_order])
    rows = np.flatnonzero(in_group[option_order])
    out_option[orders] = -1
    out_mask[orders] = -1
    out_total[orders] = np.inf
    run_option[orders] = -1
    run_mask[orders] = -1
    run_total[orders] = np.inf
    if rows.size == 0:
        return
    # Local numbering: candidates of the group 0..C-1 (still grouped by order, by node id within).
    local = np.full(len(batch.cand_order), -1, dtype=np.int64)
    local[cands] = np.arange(len(cands))
    row_cand = local[batch.opt_cand[rows]]
    row_order = option_order[rows]
    subsets = np.arange(n_subsets, dtype=np.int64)
    bits = ((subsets[:, None] >> np.arange(n)[None, :]) & 1).astype(np.float64)  # subsets x units
    # Per order (`orders` is sorted), then spread to its options; float products run on BLAS, counts stay exact.
    row_slot = np.searchsorted(orders, row_order)
    units_count = (batch.unit_quantity[orders, :n].astype(np.float64) @ bits.T)[row_slot]
    has_hazmat = ((batch.unit_hazmat[orders, :n].astype(np.float64) @ bits.T) > 0)[row_slot]
    handling_cost = batch.cand_handling_cost[batch.opt_cand[rows]]
    handling = handling_cost[:, None] * (1 + ruleset.scoring.handling_per_extra_unit * (units_count - 1))
    total = base_price[rows][:, None] + handling
    stocked = (subsets[None, :] & ~batch.cand_supply[batch.opt_cand[rows]][:, None]) == 0
    eligible = (rule[rows] == NO_RULE)[:, None] & stocked & ~(has_hazmat & hazmat_blocked[rows][:, None])
    eligible[:, 0] = False

    # Cheapest eligible option per (candidate, subset); ties to the smaller (carrier, service), then the earlier row.
    n_cands = len(cands)
    best = np.full((n_cands, n_subsets), np.inf)
    pick = np.full((n_cands, n_subsets), -1, dtype=np.int64)
    for subset in range(1, n_subsets):
        r = np.flatnonzero(eligible[:, subset])
        if r.size:
            winner = _least_per_run(runs=row_cand[r], keys=(total[r, subset], tiebreak[rows[r]]))
            best[row_cand[r[winner]], subset] = total[r[winner], subset]
            pick[row_cand[r[winner]], subset] = rows[r[winner]]

    # Orders of the group, and each candidate's position among its order's candidates (= node id rank).
    group_order = batch.cand_order[cands]
    order_slot = np.searchsorted(orders, group_order)
    order_start = np.r_[0, np.flatnonzero(group_order[1:] != group_order[:-1]) + 1]
    rank = np.arange(n_cands) - np.repeat(order_start, np.diff(np.r_[order_start, n_cands]))
    width = int(rank.max()) + 1
    split_penalty = ruleset.scoring.split_penalty

    totals, slots, node_keys, plan_keys, assignments = [], [], [], [], []
    n_orders = len(orders)
    top: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for masks in partitions(n, max_blocks):
        k = len(masks)
        depth = min(k + 1, width)
        blocks = [
            _cheapest(best=best, mask=m, depth=depth, slot=order_slot, rank=rank, shape=(n_orders, width), top=top)
            for m in masks
        ]
        # Every assignment of each block to one of its `depth` cheapest nodes, all orders at once.
        grid = (n_orders,) + (depth,) * k
        value = np.full(grid, split_penalty * (k - 1))
        chosen = np.empty(grid + (k,), dtype=np.int64)
        for b, (values, candidates) in enumerate(blocks):
            shape = [n_orders] + [1] * k
            shape[1 + b] = depth
            value = value + values.reshape(shape)
            chosen[..., b] = np.broadcast_to(candidates.reshape(shape), grid)
        value, chosen = value.reshape(-1), chosen.reshape(-1, k)
        valid = np.isfinite(value) & (chosen >= 0).all(axis=1)
        if k > 1:
            valid &= (np.diff(np.sort(chosen, axis=1), axis=1) != 0).all(axis=1)
        keep = np.flatnonzero(valid)
        if keep.size == 0:
            continue
        chosen = chosen[keep]
        totals.append(value[keep])
        slots.append(keep // depth**k)
        node_keys.append(_pack(np.sort(rank[chosen], axis=1), width=width, length=max_blocks))
        plan = np.stack([rank[chosen[:, b]] * n_subsets + masks[b] for b in range(k)], axis=1)
        plan_keys.append(_pack(plan, width=width * n_subsets, length=max_blocks))
        assignments.append((chosen, masks))
    if not totals:
        return
    all_total = np.concatenate(totals)
    all_slot = np.concatenate(slots)
    all_node = np.concatenate(node_keys)
    all_plan = np.concatenate(plan_keys)
    which = np.concatenate([np.full(len(t), i) for i, t in enumerate(totals)])
    within = np.concatenate([np.arange(len(t)) for t in totals])
    ranking = np.lexsort((all_plan, all_node, np.round(all_total, 9), all_slot))
    slot_sorted = all_slot[ranking]
    first = np.r_[True, slot_sorted[1:] != slot_sorted[:-1]]
    second = np.r_[False, ~first[1:] & first[:-1]]
    for pick_mask, option_out, mask_out, total_out in (
        (first, out_option, out_mask, out_total),
        (second, run_option, run_mask, run_total),
    ):
        for position in np.flatnonzero(pick_mask):
            i = ranking[position]
            chosen_cands, masks = assignments[which[i]]
            o = orders[all_slot[i]]
            total_out[o] = all_total[i]
            for b, mask in enumerate(masks):
                option_out[o, b] = pick[chosen_cands[within[i], b], mask]
                mask_out[o, b] = mask


def _least_per_run(*, runs: np.ndarray, keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """Per run of equal values in the sorted `runs`, the position of its least element by `keys` (the first on ties).

    A few linear passes instead of a sort: the backtest calls this on millions of options.
    """
    starts = np.r_[0, np.flatnonzero(runs[1:] != runs[:-1]) + 1]
    lengths = np.diff(np.r_[starts, len(runs)])
    tied = np.ones(len(runs), dtype=bool)
    for key in keys:
        # NaN ranks last, as a sort would put it; every run keeps at least one element tied.
        masked = np.where(tied, np.nan_to_num(key, nan=np.inf), np.inf)
        tied &= masked == np.repeat(np.minimum.reduceat(masked, starts), lengths)
    return np.minimum.reduceat(np.where(tied, np.arange(len(runs)), len(runs)), starts)


def _cheapest(
    *,
    best: np.ndarray,
    mask: int,
    depth: int,
    slot: np.ndarray,
    rank: np.ndarray,
    shape: tuple[int, int],
    top: dict,
) -> tuple[np.ndarray, np.ndarray]:
    """Per order, the `depth` cheapest candidates for a unit subset (values inf and candidates -1 when fewer)."""
    if (mask, depth) not in top:
        grid_val = np.full(shape, np.inf)
        grid_cand = np.full(shape, -1, dtype=np.int64)
        grid_val[slot, rank] = best[:, mask]
        grid_cand[slot, rank] = np.arange(len(slot))
        # Stable by value then rank: ties go to the smaller node id.
        order = np.argsort(grid_val, axis=1, kind="stable")[:, :depth]
        top[(mask, depth)] = (np.take_along_axis(grid_val, order, axis=1), np.take_along_axis(grid_cand, order, axis=1))
    return top[(mask, depth)]


def _pack(keys: np.ndarray, *, width: int, length: int) -> np.ndarray:
    """Rows of small non-negative ints as one sortable int (shorter rows first, as tuples compare)."""
    base = width + 1
    packed = np.zeros(len(keys), dtype=np.float64)
    for j in range(length):
        column = keys[:, j] + 1 if j < keys.shape[1] else np.zeros(len(keys))
        packed = packed * base + column
    return packed
