"""The network twin: a seeded simulator of demand, routing, congestion, carrier delay and exceptions.

The twin advances one day at a time, vectorised over the day's orders. Within a day, orders are
routed in decision waves by any `RoutingPolicy`; the load the policy assigns to a node is what
congests it, so a better policy really can relieve congestion. Every shipment records the
probabilities its outcomes were drawn from (`p_true_*`) and the twin's best forecast at decision
time (`p_decision_*`), which only evaluation may read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from features.calendar import is_peak
from features.errors import PolicyError
from features.twin.frames import RunBuffers, SimulationResult, assemble, shipments_frame
from features.twin.network import REGIONS, Network, build_network
from features.twin.policy import SECONDS_PER_DAY, Allocation, DecisionBatch, RoutingPolicy, baseline_policy
from features.twin.scenario import SERVICES, TIERS, Scenario

# Share of a day's orders placed in each hour (a retail web-shop profile).
HOURLY_PROFILE = np.array(
    [
        0.6,
        0.4,
        0.3,
        0.25,
        0.25,
        0.35,
        0.7,
        1.2,
        1.8,
        2.2,
        2.4,
        2.5,
        2.5,
        2.4,
        2.3,
        2.2,
        2.1,
        2.2,
        2.5,
        2.8,
        2.9,
        2.6,
        1.9,
        1.1,
    ]
)
HOURLY_PROFILE = HOURLY_PROFILE / HOURLY_PROFILE.sum()
CUMULATIVE_PROFILE = np.concatenate([[0.0], np.cumsum(HOURLY_PROFILE)])
PROMISE_DAYS = np.array([5, 2, 1])  # ground, two_day, next_day, from the order day
PROMISE_CUTOFF_HOUR = 14  # orders after this hour are promised one day later
SERVICE_MIX_BY_TIER = np.array([[0.75, 0.20, 0.05], [0.50, 0.35, 0.15], [0.20, 0.40, 0.40]])
PILOT_DAYS = 7
PILOT_STREAM = 1
MIN_CAPACITY = 40.0
POST_PEAK_DAYS = 14
QTY_PROBS = np.array([0.85, 0.12, 0.03])
# Late-handover formula (logit scale).
HANDOVER_UTIL_KNEE = 0.75
HANDOVER_UTIL_SLOPE = 2.5
HANDOVER_OVERLOAD_SLOPE = 3.5
HANDOVER_BACKLOG_SLOPE = 0.8
HANDOVER_NEAR_CUTOFF = 0.5
HANDOVER_WEEKDAY = np.array([0.15, 0.05, 0.0, 0.0, 0.05, -0.10, -0.05])
HANDOVER_NODE_DAY_NOISE = 0.25
# Carrier-delay formula (logit scale).
CARRIER_BASE = -3.3
CARRIER_BAND = np.array([0.0, 0.15, 0.35, 0.55])
CARRIER_SERVICE = np.array([0.0, 0.2, 0.45])
CARRIER_LOAD_KNEE = 1.1
CARRIER_LOAD_SLOPE = 1.5
CARRIER_LATE_HANDOVER = 0.7
CARRIER_SLACK = -0.45
CARRIER_BEHIND = 1.8
CARRIER_DAY_NOISE = 0.2
CARRIER_WEEKDAY = np.array([0.05, 0.0, 0.0, 0.05, 0.10, 0.15, 0.0])


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def simulate(
    *,
    scenario: Scenario,
    policy: RoutingPolicy = baseline_policy,
    seed: int | None = None,
    on_day: Callable[[int, int], None] | None = None,
) -> SimulationResult:
    """Run the twin forward over the scenario's days under a routing policy."""
    seed = scenario.seed if seed is None else seed
    rng = np.random.default_rng(seed)
    network = build_network(scenario=scenario, rng=rng)
    network = calibrate_capacity(scenario=scenario, network=network, seed=seed)
    run = _Run(scenario=scenario, network=network, policy=policy, rng=rng)
    # A policy that learns from the run (a model-priced one) sees each day's shipments once the day is done.
    observe = getattr(policy, "observe", None)
    for day in range(scenario.days):
        shipped = len(run.buffers.shipments)
        run.step(day=day)
        if observe is not None:
            for arrays in run.buffers.shipments[shipped:]:
                observe(shipments_frame(arrays=arrays, network=network))
        if on_day is not None:
            on_day(day + 1, scenario.days)
    return run.result()


def calibrate_capacity(*, scenario: Scenario, network: Network, seed: int) -> Network:
    """Size each node's capacity as its headroom times its load in a pilot week under the baseline policy.

    The pilot uses its own random stream, so the network is the same whatever policy is simulated.
    """
    pilot_days = min(PILOT_DAYS, scenario.days)
    pilot_scenario = scenario.model_copy(update={"days": pilot_days, "events": ()})
    unlimited = replace(network, node_capacity=np.full(network.n_nodes, 1e9))
    pilot = _Run(
        scenario=pilot_scenario,
        network=unlimited,
        policy=baseline_policy,
        rng=np.random.default_rng([seed, PILOT_STREAM]),
    )
    for day in range(pilot_days):
        pilot.step(day=day)
    mean_load = np.mean([d["assigned"] for d in pilot.buffers.node_days], axis=0)
    return replace(network, node_capacity=np.maximum(network.node_headroom * mean_load, MIN_CAPACITY))


class _Run:
    """The mutable state of one simulation run."""

    def __init__(self, *, scenario: Scenario, network: Network, policy: RoutingPolicy, rng: np.random.Generator):
        self.scenario = scenario
        self.network = network
        self.policy = policy
        self.rng = rng
        self.buffers = RunBuffers()
        self.start_day = int(np.datetime64(scenario.start_date, "D").astype(np.int64))
        n_nodes, n_carriers = network.n_nodes, len(network.carrier_names)
        self.system_stock = network.target_stock.copy()
        self.physical_stock = network.target_stock.copy()
        self.backlog = np.zeros(n_nodes)
        self.previous_assigned = network.node_capacity * 0.8
        self.carrier_volume_history: list[np.ndarray] = []
        self.order_seq = 0
        self.shipment_seq = 0
        self.unfilled_lines = 0
        self.peak, self.after_peak = self._season()
        self.demand_expected, self.demand_realised = self._demand_factors()
        self.capacity_announced, self.capacity_real = self._capacity()
        self.disruptions = self._draw_disruptions()
        self.disruption_true, self.disruption_known = self._disruption_grids(n_carriers=n_carriers)
        self.carrier_noise = rng.normal(0.0, CARRIER_DAY_NOISE, size=(scenario.days, n_carriers, len(REGIONS)))

    # ----- set-up --------------------------------------------------------------------------
    def _season(self) -> tuple[np.ndarray, np.ndarray]:
        """Per day: inside the Black Friday peak; in the two weeks after it."""
        days = np.arange(self.scenario.days)
        peak = is_peak(days=(self.start_day + days).astype("datetime64[D]"))
        after_peak = np.zeros_like(peak)
        for lag in range(1, POST_PEAK_DAYS + 1):
            after_peak[lag:] |= peak[:-lag]
        return peak, after_peak & ~peak

    def _demand_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """Expected (knowable) and realised demand multipliers per day."""
        spec = self.scenario.demand
        days = np.arange(self.scenario.days)
        weekday = (self.start_day + days + 3) % 7
        factor = np.asarray(spec.weekday_factors)[weekday] * (1 + spec.growth_per_day) ** days
        peak, after_peak = self.peak, self.after_peak
        factor = np.where(peak, factor * spec.peak_factor, factor)
        factor = np.where(after_peak, factor * spec.post_peak_factor, factor)
        quiet = np.flatnonzero(~peak & ~after_peak)
        promos = self.rng.choice(quiet, size=min(spec.promotion_days, quiet.size), replace=False)
        factor[promos] *= spec.promotion_factor
        realised = factor * self.rng.lognormal(0.0, 0.04, size=factor.size)
        return factor, realised

    def _capacity(self) -> tuple[np.ndarray, np.ndarray]:
        """Announced (scheduled) and realised daily capacity per node."""
        days = np.arange(self.scenario.days)
        weekday = (self.start_day + days + 3) % 7
        announced = np.tile(self.network.node_capacity, (self.scenario.days, 1))
        # Seasonal staffing is planned ahead, so it is part of the announced capacity.
        staffing = np.where(self.peak, self.scenario.demand.peak_staffing, 1.0)
        staffing = np.where(self.after_peak, self.scenario.demand.post_peak_staffing, staffing)
        announced = announced * staffing[:, None]
        hidden = np.ones_like(announced)
        node_index = {node: i for i, node in enumerate(self.network.node_ids)}
        for event in self.scenario.events:
            if event.kind != "node_capacity":
                continue
            if event.node not in node_index:
                raise PolicyError(f"scenario event names unknown node {event.node!r}; nodes are {sorted(node_index)}")
            active = (days >= event.start_day) & (days < event.end_day)
            if event.weekdays is not None:
                active &= np.isin(weekday, event.weekdays)
            target = announced if event.announced else hidden
            target[active, node_index[event.node]] *= event.capacity_factor
        shock = self.rng.random(announced.shape) < self.scenario.disruptions.node_shock_share
        hidden = np.where(shock, hidden * self.rng.uniform(0.5, 0.8, size=announced.shape), hidden)
        return announced, announced * hidden

    def _draw_disruptions(self) -> list[dict]:
        """Random weather and hub outages plus the scenario's scheduled events."""
        spec = self.scenario.disruptions
        days = self.scenario.days
        found: list[dict] = []
        carriers = list(self.network.carrier_names)
        for region in range(len(REGIONS)):
            for _ in range(self.rng.poisson(spec.weather_per_region_per_100_days * days / 100)):
                start = int(self.rng.integers(0, days))
                # Weather fronts cross borders: the home region and up to two others.
                others = self.rng.choice(len(REGIONS), size=int(self.rng.integers(0, 3)), replace=False)
                found.append(
                    {
                        "kind": "weather",
                        "carrier": -1,
                        "regions": sorted({region, *(int(r) for r in others)}),
                        "start_day": start,
                        "end_day": min(days, start + int(self.rng.integers(*spec.weather_days))),
                        "severity": float(self.rng.uniform(*spec.weather_severity)),
                        "announced": bool(self.rng.random() < spec.weather_announced_share),
                    }
                )
        for c in range(len(carriers)):
            for _ in range(self.rng.poisson(spec.hub_outage_per_carrier_per_100_days * days / 100)):
                start = int(self.rng.integers(0, days))
                regions = self.rng.choice(len(REGIONS), size=int(self.rng.integers(2, 4)), replace=False)
                found.append(
                    {
                        "kind": "hub_outage",
                        "carrier": c,
                        "regions": sorted(int(r) for r in regions),
                        "start_day": start,
                        "end_day": min(days, start + int(self.rng.integers(*spec.hub_outage_days))),
                        "severity": float(self.rng.uniform(*spec.hub_outage_severity)),
                        "announced": False,
                    }
                )
        for event in self.scenario.events:
            if event.kind == "node_capacity":
                continue
            if event.region is not None and event.region not in REGIONS:
                raise PolicyError(f"scenario event names unknown region {event.region!r}; regions are {list(REGIONS)}")
            found.append(
                {
                    "kind": event.kind,
                    "carrier": carriers.index(event.carrier) if event.carrier else -1,
                    "regions": [REGIONS.index(event.region)] if event.region else list(range(len(REGIONS))),
                    "start_day": event.start_day,
                    "end_day": event.end_day,
                    "severity": event.severity,
                    "announced": event.announced,
                }
            )
        for item in found:
            # Announced events are published two days ahead; others become knowable from lane history.
            item["known_day"] = (
                max(0, item["start_day"] - 2) if item["announced"] else item["start_day"] + spec.detect_lag_days
            )
        return found

    def _disruption_grids(self, *, n_carriers: int) -> tuple[np.ndarray, np.ndarray]:
        """Carrier-delay logit lift per (day, carrier, region): the truth and what is known that day."""
        shape = (self.scenario.days, n_carriers, len(REGIONS))
        true_lift, known_lift = np.zeros(shape), np.zeros(shape)
        for item in self.disruptions:
            carriers = range(n_carriers) if item["carrier"] < 0 else [item["carrier"]]
            for day in range(item["start_day"], item["end_day"]):
                for c in carriers:
                    true_lift[day, c, item["regions"]] += item["severity"]
                    if day >= item["known_day"]:
                        known_lift[day, c, item["regions"]] += item["severity"]
        return true_lift, known_lift

    # ----- one day -------------------------------------------------------------------------
    def step(self, *, day: int) -> None:
        """Simulate one day: replenish, take orders, route them wave by wave, then ship and deliver."""
        self._replenish_and_shrink(day=day)
        orders = self._draw_orders(day=day)
        self.day_orders = orders
        self.assigned = np.zeros(self.network.n_nodes)
        day_shipments: list[dict] = []
        waves = self.scenario.decision_waves_per_day
        wave_of_order = (orders["order_time"] % SECONDS_PER_DAY) * waves // SECONDS_PER_DAY
        line_start = orders["line_start"]
        for wave in range(waves):
            in_wave = np.flatnonzero(wave_of_order == wave)
            self.buffers.node_waves.append(
                {
                    "day": np.full(self.network.n_nodes, day, dtype=np.int32),
                    "wave": np.full(self.network.n_nodes, wave, dtype=np.int16),
                    "node": np.arange(self.network.n_nodes, dtype=np.int16),
                    "capacity": self.capacity_announced[day].copy(),
                    "assigned_so_far": self.assigned.copy(),
                    "backlog_start": self.backlog.copy(),
                    "expected_load": self._expected_load(day=day),
                }
            )
            if in_wave.size == 0:
                continue
            # Orders are sorted by time, so a wave's orders (and their lines) are one contiguous run.
            lines = np.arange(line_start[in_wave[0]], line_start[in_wave[-1] + 1])
            first = self._route(
                day=day,
                orders=orders,
                order_idx=in_wave,
                line_idx=lines,
                decision_time=orders["allocated_at"][in_wave],
                attempt=1,
                excluded=None,
            )
            day_shipments.append(first)
            failed = first["exception"] > 0
            if failed.any():
                retry_lines, excluded = self._lines_of(shipments=first, mask=failed)
                retry_orders = np.unique(orders["line_order"][retry_lines])
                fail_time = first["exception_at"][failed]
                fail_order = first["order"][failed]
                # A re-route is decided when the first attempt failed (the latest failure of the order).
                when = np.zeros(len(retry_orders), dtype=np.int64)
                np.maximum.at(when, np.searchsorted(retry_orders, fail_order), fail_time)
                second = self._route(
                    day=day,
                    orders=orders,
                    order_idx=retry_orders,
                    line_idx=retry_lines,
                    decision_time=when,
                    attempt=2,
                    excluded=excluded,
                )
                day_shipments.append(second)
        self._ship_and_deliver(day=day, shipments=_concat(day_shipments))

    def _replenish_and_shrink(self, *, day: int) -> None:
        """Nodes due for replenishment are restocked to target; physical stock silently shrinks."""
        net = self.network
        due = (day + net.node_replenish_offset) % net.node_replenish_every == 0
        self.system_stock[due] = net.target_stock[due]
        self.physical_stock[due] = net.target_stock[due]
        n_shrink = self.rng.poisson(self.scenario.exceptions.shrink_units_per_node_day * net.n_nodes)
        nodes = self.rng.integers(0, net.n_nodes, size=n_shrink)
        skus = self.rng.choice(len(net.sku_popularity), size=n_shrink, p=net.sku_popularity)
        np.subtract.at(self.physical_stock, (nodes, skus), 1)
        np.maximum(self.physical_stock, 0, out=self.physical_stock)

    def _draw_orders(self, *, day: int) -> dict:
        """The day's orders and their lines, sorted by order time."""
        rng, net, spec = self.rng, self.network, self.scenario.demand
        n = int(rng.poisson(spec.base_orders_per_day * self.demand_realised[day]))
        hours = rng.choice(24, size=n, p=HOURLY_PROFILE)
        # No orders in the day's last minutes, so that allocation and re-routing stay within the day.
        seconds = np.sort(np.minimum(hours * 3600 + rng.integers(0, 3600, size=n), SECONDS_PER_DAY - 400))
        epoch_day = self.start_day + day
        order_time = epoch_day * SECONDS_PER_DAY + seconds
        allocated_at = order_time + rng.integers(5, 120, size=n)
        zone = rng.choice(len(net.zone_weight), size=n, p=net.zone_weight)
        tier = rng.choice(len(TIERS), size=n, p=np.asarray(spec.tier_shares))
        service = (rng.random(n)[:, None] > np.cumsum(SERVICE_MIX_BY_TIER[tier], axis=1)).sum(axis=1)
        service = np.minimum(service, len(SERVICES) - 1)
        promised = epoch_day + PROMISE_DAYS[service] + (seconds // 3600 >= PROMISE_CUTOFF_HOUR)
        n_lines = rng.choice(4, size=n, p=np.asarray(spec.lines_per_order)) + 1
        line_order = np.repeat(np.arange(n), n_lines)
        line_start = np.concatenate([[0], np.cumsum(n_lines)])
        line_no = np.arange(line_order.size) - line_start[line_order]
        sku = rng.choice(len(net.sku_popularity), size=line_order.size, p=net.sku_popularity)
        qty = rng.choice(3, size=line_order.size, p=QTY_PROBS) + 1
        seq = self.order_seq + np.arange(n)
        self.order_seq += n
        self.buffers.orders.append(
            {
                "seq": seq,
                "order_time": order_time,
                "zone": zone,
                "tier": tier,
                "service": service,
                "promised_day": promised,
                "n_lines": n_lines,
            }
        )
        self.buffers.lines.append({"order_seq": seq[line_order], "line_no": line_no, "sku": sku, "qty": qty})
        return {
            "seq": seq,
            "order_time": order_time,
            "allocated_at": allocated_at,
            "zone": zone,
            "tier": tier,
            "service": service,
            "promised_day": promised,
            "n_lines": n_lines,
            "line_order": line_order,
            "line_start": line_start,
            "line_no": line_no,
            "sku": sku,
            "qty": qty,
        }

    def _expected_load(self, *, day: int) -> np.ndarray:
        """Each node's expected shipments today: yesterday's load scaled by the expected demand change."""
        ratio = self.demand_expected[day] / self.demand_expected[day - 1] if day > 0 else 1.0
        return self.previous_assigned * ratio

    def _route(
        self,
        *,
        day: int,
        orders: dict,
        order_idx: np.ndarray,
        line_idx: np.ndarray,
        decision_time: np.ndarray,
        attempt: int,
        excluded: np.ndarray | None,
    ) -> dict:
        """Build the decision batch, ask the policy, check its answer, and allocate."""
        net = self.network
        n_nodes = net.n_nodes
        # Batch-local numbering: orders 0..k-1, and lines renumbered 0..m-1 within each order.
        local_of = np.full(len(orders["seq"]), -1, dtype=np.int64)
        local_of[order_idx] = np.arange(order_idx.size)
        line_order = local_of[orders["line_order"][line_idx]]
        sort = np.argsort(line_order, kind="stable")
        line_idx, line_order = line_idx[sort], line_order[sort]
        if excluded is not None:
            excluded = excluded[sort]
        counts = np.bincount(line_order, minlength=order_idx.size)
        starts = np.concatenate([[0], np.cumsum(counts)])
        line_no = np.arange(line_idx.size) - starts[line_order]
        sku, qty = orders["sku"][line_idx], orders["qty"][line_idx]

        available = (self.system_stock[:, sku] >= qty).T  # lines x nodes
        if excluded is not None:
            available[np.arange(line_idx.size), excluded] = False
        bits = available.astype(np.int64) << line_no[:, None]
        order_mask = np.add.reduceat(bits, starts[:-1], axis=0)
        original_bits = available.astype(np.int64) << orders["line_no"][line_idx][:, None]
        original_mask = np.add.reduceat(original_bits, starts[:-1], axis=0)
        zone = orders["zone"][order_idx]
        distance = np.where(order_mask > 0, net.distance_km[zone], np.inf)
        k = min(self.scenario.candidate_nodes, n_nodes)
        nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]
        nearest_distance = np.take_along_axis(distance, nearest, axis=1)
        keep = np.isfinite(nearest_distance)
        cand_order = np.repeat(np.arange(order_idx.size), k).reshape(-1, k)[keep]
        cand_node = nearest[keep]
        cand_mask = order_mask[cand_order, cand_node]

        batch = DecisionBatch(
            network=net,
            day=day,
            order_time=orders["order_time"][order_idx],
            decision_time=decision_time,
            order_zone=zone,
            order_tier=orders["tier"][order_idx],
            order_service=orders["service"][order_idx],
            order_promised_day=orders["promised_day"][order_idx],
            order_n_lines=counts,
            line_order=line_order,
            line_no=line_no,
            line_sku=sku,
            line_qty=qty,
            line_hazmat=net.sku_hazmat[sku],
            cand_order=cand_order,
            cand_node=cand_node,
            cand_mask=cand_mask,
            cand_distance_km=nearest_distance[keep],
            node_capacity=self.capacity_announced[day].copy(),
            node_assigned=self.assigned.copy(),
            node_backlog=self.backlog.copy(),
            node_expected_load=self._expected_load(day=day),
        )
        allocation = self.policy(batch)
        _check_allocation(batch=batch, allocation=allocation, order_mask=order_mask)

        self.buffers.candidates.append(
            {
                "order_seq": orders["seq"][order_idx][cand_order],
                "attempt": np.full(cand_order.size, attempt, np.int8),
                "decision_time": decision_time[cand_order],
                "node": cand_node.astype(np.int16),
                "lines_available": original_mask[cand_order, cand_node].astype(np.int16),
                "distance_km": nearest_distance[keep],
            }
        )
        routed = allocation.line_node >= 0
        self.unfilled_lines += int((~routed).sum())
        key = line_order[routed] * n_nodes + allocation.line_node[routed]
        unique_key, first_line, inverse = np.unique(key, return_index=True, return_inverse=True)
        ship_order_local = unique_key // n_nodes
        ship_node = unique_key % n_nodes
        ship_service = allocation.line_service[routed][first_line]
        routed_lines = line_idx[routed]
        n_ship = unique_key.size
        units = np.bincount(inverse, weights=qty[routed], minlength=n_ship)
        hazmat = np.bincount(inverse, weights=net.sku_hazmat[sku[routed]], minlength=n_ship) > 0
        n_ship_lines = np.bincount(inverse, minlength=n_ship)
        alloc_time = decision_time[ship_order_local]
        ship_by_day = batch.ship_by_day(node=ship_node, decision_time=alloc_time)
        np.add.at(self.assigned, ship_node, 1.0)
        np.subtract.at(self.system_stock, (ship_node[inverse], sku[routed]), qty[routed])

        exception = np.zeros(n_ship, dtype=np.int8)
        exception_at = np.zeros(n_ship, dtype=np.int64)
        if attempt == 1 and n_ship:
            exception, exception_at = self._pick(
                day=day,
                ship_node=ship_node,
                alloc_time=alloc_time,
                inverse=inverse,
                line_sku=sku[routed],
                line_qty=qty[routed],
            )
        else:
            np.subtract.at(self.physical_stock, (ship_node[inverse], sku[routed]), qty[routed])
            np.maximum(self.physical_stock, 0, out=self.physical_stock)

        self.shipment_seq += n_ship
        return {
            "seq": self.shipment_seq - n_ship + np.arange(n_ship),
            "order": order_idx[ship_order_local],
            "node": ship_node,
            "service": ship_service,
            "allocated_at": alloc_time,
            "ship_by_day": ship_by_day,
            "n_lines": n_ship_lines,
            "units": units.astype(np.int64),
            "hazmat": hazmat,
            "attempt": np.full(n_ship, attempt, dtype=np.int8),
            "exception": exception,
            "exception_at": exception_at,
            "line_idx": routed_lines,
            "line_ship": inverse,
        }

    def _pick(
        self,
        *,
        day: int,
        ship_node: np.ndarray,
        alloc_time: np.ndarray,
        inverse: np.ndarray,
        line_sku: np.ndarray,
        line_qty: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Node rejections and short picks; returns per shipment the exception (1 reject, 2 short) and when."""
        rng, spec = self.rng, self.scenario.exceptions
        n_ship = ship_node.size
        overloaded = (self.assigned / self.capacity_announced[day])[ship_node] > 1.2
        reject = rng.random(n_ship) < spec.node_rejection + spec.node_rejection_overload * overloaded
        line_node = ship_node[inverse]
        attempt_line = ~reject[inverse]
        # Lines taken in allocation order from the physical shelf; those that find it empty fail.
        order = np.lexsort((alloc_time[inverse], line_sku, line_node))
        key = line_node[order] * self.physical_stock.shape[1] + line_sku[order]
        demand = np.where(attempt_line[order], line_qty[order], 0)
        running = np.cumsum(demand)
        group_start = np.r_[0, np.flatnonzero(np.diff(key)) + 1]
        before = np.repeat(running[group_start] - demand[group_start], np.diff(np.r_[group_start, key.size]))
        short_sorted = attempt_line[order] & (running - before > self.physical_stock[line_node[order], line_sku[order]])
        short_line = np.zeros(inverse.size, dtype=bool)
        short_line[order] = short_sorted
        short = np.bincount(inverse, weights=short_line, minlength=n_ship) > 0
        failed = reject | short
        exception = np.where(reject, 1, np.where(short, 2, 0)).astype(np.int8)
        picked = ~failed[inverse]
        np.subtract.at(self.physical_stock, (line_node[picked], line_sku[picked]), line_qty[picked])
        np.maximum(self.physical_stock, 0, out=self.physical_stock)
        # Lines of failed shipments go back on the books; a short pick triggers a cycle count.
        back = ~picked
        np.add.at(self.system_stock, (line_node[back], line_sku[back]), line_qty[back])
        counted = short_line
        self.system_stock[line_node[counted], line_sku[counted]] = self.physical_stock[
            line_node[counted], line_sku[counted]
        ]
        end_of_day = (self.start_day + day + 1) * SECONDS_PER_DAY - 60
        delay = rng.integers(3600, 3 * 3600, size=n_ship)
        exception_at = np.where(failed, np.minimum(alloc_time + delay, end_of_day), 0)
        return exception, exception_at

    def _lines_of(self, *, shipments: dict, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lines of the selected shipments and, per line, the node that failed it."""
        selected = mask[shipments["line_ship"]]
        lines = shipments["line_idx"][selected]
        failed_node = shipments["node"][shipments["line_ship"][selected]]
        return lines, failed_node

    # ----- end of day ----------------------------------------------------------------------
    def _ship_and_deliver(self, *, day: int, shipments: dict) -> None:
        """Hand parcels to carriers (late when the node is congested) and deliver them (late on bad lanes)."""
        rng, net = self.rng, self.network
        epoch_day = self.start_day + day
        weekday = (epoch_day + 3) % 7
        n = shipments["seq"].size
        node = shipments["node"]
        capacity_ann = self.capacity_announced[day]
        capacity_real = self.capacity_real[day]
        total = self.backlog + self.assigned

        # Rank of each shipment in its node's day, in allocation order: the load assigned so far.
        order = np.lexsort((shipments["seq"], shipments["allocated_at"], node))
        rank = np.empty(n, dtype=np.int64)
        node_sorted = node[order]
        starts = np.r_[0, np.flatnonzero(np.diff(node_sorted)) + 1]
        rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        so_far = rank + 1

        hour = (shipments["allocated_at"] % SECONDS_PER_DAY) / 3600.0
        ship_by_time = shipments["ship_by_day"] * SECONDS_PER_DAY + net.node_cutoff_hour[node] * 3600
        same_day = shipments["ship_by_day"] == epoch_day
        near_cutoff = same_day & (net.node_cutoff_hour[node] - hour < 2.0)
        expected_rest = self._expected_load(day=day)[node] * (1.0 - np.interp(hour, np.arange(25), CUMULATIVE_PROFILE))
        static_logit = net.node_base_logit[node] + HANDOVER_WEEKDAY[weekday] + HANDOVER_NEAR_CUTOFF * near_cutoff
        util_real = (total / capacity_real)[node]
        backlog_real = np.minimum(self.backlog / capacity_real, 1.0)[node]
        noise = rng.normal(0.0, HANDOVER_NODE_DAY_NOISE, size=net.n_nodes)[node]
        p_true_h = sigmoid(static_logit + _handover_load_logit(util=util_real, backlog=backlog_real) + noise)
        util_dec = (self.backlog[node] + so_far + expected_rest) / capacity_ann[node]
        backlog_dec = np.minimum(self.backlog / capacity_ann, 1.0)[node]
        p_dec_h = sigmoid(static_logit + _handover_load_logit(util=util_dec, backlog=backlog_dec))

        shipped = shipments["exception"] == 0
        late_h = shipped & (rng.random(n) < p_true_h)
        window = np.maximum(ship_by_time - shipments["allocated_at"] - 1800, 60)
        on_time_at = shipments["allocated_at"] + 1800 + (rng.random(n) * window).astype(np.int64)
        on_time_at = np.minimum(on_time_at, ship_by_time - 60)
        on_time_at = np.maximum(on_time_at, shipments["allocated_at"] + 60)
        late_hours = 1.0 + rng.exponential(14.0, size=n) * (1.0 + backlog_real)
        handed_over = np.where(late_h, ship_by_time + (late_hours * 3600).astype(np.int64), on_time_at)

        # Carrier stage.
        cs = shipments["service"]
        carrier = net.cs_carrier[cs]
        service = net.cs_service[cs]
        zone = self.day_orders["zone"][shipments["order"]]
        region = net.zone_region[zone]
        band = net.band[zone, node]
        transit = net.cs_transit[cs, region, band]
        promised_day = self.day_orders["promised_day"][shipments["order"]]
        planned_day = shipments["ship_by_day"] + transit
        volume = np.bincount(carrier[shipped], minlength=len(net.carrier_names)).astype(float)
        history = self.carrier_volume_history[-28:]
        normal = np.mean(history, axis=0) if history else volume
        expected_volume = (
            self.carrier_volume_history[-1] * self.demand_expected[day] / self.demand_expected[day - 1]
            if history
            else volume
        )
        load_real = CARRIER_LOAD_SLOPE * np.maximum(0.0, volume / np.maximum(normal, 1.0) - CARRIER_LOAD_KNEE)
        load_dec = CARRIER_LOAD_SLOPE * np.maximum(0.0, expected_volume / np.maximum(normal, 1.0) - CARRIER_LOAD_KNEE)
        static_c = (
            CARRIER_BASE
            + net.lane_logit[carrier, region]
            + CARRIER_BAND[band]
            + CARRIER_SERVICE[service]
            + CARRIER_WEEKDAY[weekday]
        )
        handover_day = handed_over // SECONDS_PER_DAY
        slack_real = promised_day - (handover_day + transit)
        logit_true = (
            static_c
            + load_real[carrier]
            + self.disruption_true[day, carrier, region]
            + self.carrier_noise[day, carrier, region]
            + CARRIER_LATE_HANDOVER * late_h
            + _slack_logit(slack=slack_real)
        )
        p_true_c = sigmoid(logit_true)
        # A parcel handed over on or after its promised day cannot arrive in time.
        p_true_c = np.where(handover_day + 1 > promised_day, 1.0, p_true_c)
        slack_plan = promised_day - planned_day
        logit_dec = static_c + load_dec[carrier] + self.disruption_known[day, carrier, region]
        p_dec_c = p_dec_h * sigmoid(logit_dec + CARRIER_LATE_HANDOVER + _slack_logit(slack=slack_plan - 1)) + (
            1 - p_dec_h
        ) * sigmoid(logit_dec + _slack_logit(slack=slack_plan))

        spec = self.scenario.exceptions
        late_c = shipped & (rng.random(n) < p_true_c)
        delay_days = 1 + np.floor(rng.lognormal(np.log(2.0), 0.9, size=n)).astype(np.int64)
        late_day = np.maximum(promised_day + delay_days, handover_day + 1)
        on_time_day = np.clip(handover_day + np.maximum(transit, 1), handover_day + 1, promised_day)
        delivered_day = np.where(late_c, late_day, on_time_day)
        delivered = delivered_day * SECONDS_PER_DAY + rng.integers(9 * 3600, 20 * 3600, size=n)
        delivered = np.maximum(delivered, handed_over + 3600)
        draw = rng.random(n)
        lost = late_c & (draw < spec.lost_given_late)
        address = late_c & ~lost & (draw < spec.lost_given_late + spec.address_problem_given_late)
        damaged = shipped & ~lost & (rng.random(n) < spec.damaged)
        exception = shipments["exception"].copy()
        exception_at = shipments["exception_at"].copy()
        exception = np.where(lost, 3, np.where(address, 4, np.where(damaged, 5, exception))).astype(np.int8)
        exception_at = np.where(lost, (promised_day + 8) * SECONDS_PER_DAY, exception_at)
        exception_at = np.where(address, promised_day * SECONDS_PER_DAY + 15 * 3600, exception_at)
        exception_at = np.where(damaged, delivered, exception_at)
        delivered = np.where(shipped & ~lost, delivered, -1)
        handed_over = np.where(shipped, handed_over, -1)

        cost = net.cs_cost[cs, region, band] + net.node_handling_cost[node] * (1 + 0.25 * (shipments["units"] - 1))
        self.buffers.shipments.append(
            {
                "seq": shipments["seq"],
                "order_seq": self.day_orders["seq"][shipments["order"]],
                "order_time": self.day_orders["order_time"][shipments["order"]],
                "allocated_at": shipments["allocated_at"],
                "node": node,
                "carrier": carrier,
                "service": service,
                "zone": zone,
                "region": region,
                "distance_km": net.distance_km[zone, node],
                "ship_by": ship_by_time,
                "promised_day": promised_day,
                "handed_over_at": handed_over,
                "delivered_at": delivered,
                "exception": exception,
                "exception_at": exception_at,
                "cost": np.where(shipped, cost, np.nan),
                "tier": self.day_orders["tier"][shipments["order"]],
                "lines": shipments["n_lines"],
                "units": shipments["units"],
                "hazmat": shipments["hazmat"],
                "attempt": shipments["attempt"],
                "p_true_late_handover": np.where(shipped, p_true_h, np.nan),
                "p_true_carrier_delay": np.where(shipped, p_true_c, np.nan),
                "p_decision_late_handover": np.where(shipped, p_dec_h, np.nan),
                "p_decision_carrier_delay": np.where(shipped, p_dec_c, np.nan),
            }
        )
        processed = np.minimum(total, capacity_real)
        self.buffers.node_days.append(
            {
                "day": np.full(net.n_nodes, day, np.int32),
                "node": np.arange(net.n_nodes, dtype=np.int16),
                "capacity": capacity_ann,
                "backlog_start": self.backlog.copy(),
                "assigned": self.assigned.copy(),
                "processed": processed,
            }
        )
        self.backlog = total - processed
        self.previous_assigned = self.assigned.copy()
        self.carrier_volume_history.append(volume)

    # ----- results -------------------------------------------------------------------------
    def result(self) -> SimulationResult:
        """Assemble the collected arrays into frames."""
        return assemble(
            buffers=self.buffers,
            network=self.network,
            scenario=self.scenario,
            disruption_list=self.disruptions,
            unfilled_lines=self.unfilled_lines,
        )


def _handover_load_logit(*, util: np.ndarray, backlog: np.ndarray) -> np.ndarray:
    """How utilisation and backlog push a node towards late handovers."""
    return (
        HANDOVER_UTIL_SLOPE * np.maximum(0.0, util - HANDOVER_UTIL_KNEE)
        + HANDOVER_OVERLOAD_SLOPE * np.maximum(0.0, util - 1.0)
        + HANDOVER_BACKLOG_SLOPE * backlog
    )


def _slack_logit(*, slack: np.ndarray) -> np.ndarray:
    """Days of slack before the promise make a late delivery less likely; negative slack much more likely."""
    return CARRIER_SLACK * np.clip(slack, 0, 3) + CARRIER_BEHIND * np.clip(-slack, 0, 3)


def _check_allocation(*, batch: DecisionBatch, allocation: Allocation, order_mask: np.ndarray) -> None:
    """Refuse an allocation that ships from a node without stock, or on a service the lane lacks."""
    n_lines = len(batch.line_order)
    line_node = np.asarray(allocation.line_node)
    line_service = np.asarray(allocation.line_service)
    if line_node.shape != (n_lines,) or line_service.shape != (n_lines,):
        raise PolicyError(
            f"policy returned {line_node.shape} nodes and {line_service.shape} services for {n_lines} lines"
        )
    net = batch.network
    routed = line_node >= 0
    if (line_node >= net.n_nodes).any():
        raise PolicyError("policy returned a node index outside the network")
    nodes, orders = line_node[routed], batch.line_order[routed]
    has_line = (order_mask[orders, nodes] >> batch.line_no[routed]) & 1
    if not has_line.all():
        bad = int(np.flatnonzero(routed)[np.argmin(has_line)])
        raise PolicyError(f"policy sent line {bad} to node {net.node_ids[line_node[bad]]}, which cannot supply it")
    services = line_service[routed]
    if ((services < 0) | (services >= len(net.cs_carrier))).any():
        raise PolicyError("policy returned a carrier-service index outside the rate card")
    zone = batch.order_zone[orders]
    if (net.cs_transit[services, net.zone_region[zone], net.band[zone, nodes]] < 0).any():
        raise PolicyError("policy chose a carrier service that is not sold on that lane")
    key = orders * net.n_nodes + nodes
    if np.unique(key * len(net.cs_carrier) + services).size != np.unique(key).size:
        raise PolicyError("policy gave lines of one shipment (order, node) different carrier services")


def _concat(parts: list[dict]) -> dict:
    """Concatenate per-wave shipment dicts (line bookkeeping dropped)."""
    keys = [k for k in parts[0] if k not in ("line_idx", "line_ship")]
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}
