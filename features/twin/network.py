"""The static network of the twin: zones, nodes, SKUs, carriers and lanes, drawn from a scenario and a seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.twin.scenario import NODE_TYPES, SERVICES, Scenario

MAP_WIDTH_KM = 2400.0
MAP_HEIGHT_KM = 1600.0
REGION_COLUMNS = ("w", "cw", "ce", "e")
REGION_ROWS = ("n", "s")
REGIONS = tuple(f"{row}{col}" for row in REGION_ROWS for col in REGION_COLUMNS)
DISTANCE_BAND_EDGES_KM = (250.0, 700.0, 1400.0)
# Planned carrier transit days by service and distance band; -1 = the service is not sold on that band.
SERVICE_TRANSIT_DAYS = {"ground": (1, 2, 3, 4), "two_day": (1, 2, 2, 2), "next_day": (1, 1, 1, -1)}
SERVICE_BASE_COST = {"ground": 5.5, "two_day": 9.5, "next_day": 17.0}
BAND_COST_STEP = 0.18
NODE_PREFIX = {"dc": "DC", "store": "ST", "3pl": "TP", "dropship": "VN"}


@dataclass(frozen=True)
class Network:
    """Static arrays describing the network; indices are positions in the *_ids arrays."""

    zone_ids: np.ndarray
    zone_xy: np.ndarray
    zone_region: np.ndarray
    zone_weight: np.ndarray
    node_ids: np.ndarray
    node_type: np.ndarray
    node_xy: np.ndarray
    node_region: np.ndarray
    node_cutoff_hour: np.ndarray
    node_handling_days: np.ndarray
    node_handling_cost: np.ndarray
    node_base_logit: np.ndarray
    node_capacity: np.ndarray
    node_headroom: np.ndarray
    node_replenish_every: np.ndarray
    node_replenish_offset: np.ndarray
    coverage: np.ndarray
    target_stock: np.ndarray
    sku_popularity: np.ndarray
    sku_hazmat: np.ndarray
    distance_km: np.ndarray
    band: np.ndarray
    carrier_names: np.ndarray
    carrier_reliability: np.ndarray
    cs_carrier: np.ndarray
    cs_service: np.ndarray
    cs_transit: np.ndarray  # carrier-service x dest region x distance band; -1 = not sold
    cs_cost: np.ndarray
    lane_logit: np.ndarray

    @property
    def n_nodes(self) -> int:
        """Number of fulfilment nodes."""
        return len(self.node_ids)

    def nodes_frame(self) -> pd.DataFrame:
        """Nodes as a table (what a retailer's node master would hold)."""
        return pd.DataFrame(
            {
                "node_id": self.node_ids,
                "node_type": [NODE_TYPES[t] for t in self.node_type],
                "region": [REGIONS[r] for r in self.node_region],
                "x_km": self.node_xy[:, 0].round(1),
                "y_km": self.node_xy[:, 1].round(1),
                "cutoff_hour": self.node_cutoff_hour,
                "handling_days": self.node_handling_days,
                "handling_cost": self.node_handling_cost,
                "daily_capacity": self.node_capacity.round(0).astype(np.int64),
                "skus_carried": self.coverage.sum(axis=1),
            }
        )

    def zones_frame(self) -> pd.DataFrame:
        """Customer zones as a table."""
        return pd.DataFrame(
            {
                "zone_id": self.zone_ids,
                "region": [REGIONS[r] for r in self.zone_region],
                "x_km": self.zone_xy[:, 0].round(1),
                "y_km": self.zone_xy[:, 1].round(1),
                "demand_weight": self.zone_weight,
            }
        )

    def services_frame(self) -> pd.DataFrame:
        """Carrier services with planned transit days and cost per distance band (a rate card)."""
        rows = []
        for cs in range(len(self.cs_carrier)):
            for region, band in np.argwhere(self.cs_transit[cs] >= 0):
                rows.append(
                    {
                        "carrier": self.carrier_names[self.cs_carrier[cs]],
                        "service": SERVICES[self.cs_service[cs]],
                        "dest_region": REGIONS[region],
                        "distance_band": int(band),
                        "transit_days": int(self.cs_transit[cs, region, band]),
                        "cost": round(float(self.cs_cost[cs, region, band]), 2),
                    }
                )
        return pd.DataFrame(rows)


def region_of(*, xy: np.ndarray) -> np.ndarray:
    """Region index of each point on the map (a 4 x 2 grid)."""
    col = np.clip((xy[:, 0] / (MAP_WIDTH_KM / len(REGION_COLUMNS))).astype(int), 0, len(REGION_COLUMNS) - 1)
    row = np.clip((xy[:, 1] / (MAP_HEIGHT_KM / len(REGION_ROWS))).astype(int), 0, len(REGION_ROWS) - 1)
    return row * len(REGION_COLUMNS) + col


def distance_band(*, distance_km: np.ndarray) -> np.ndarray:
    """Distance band 0..3 of each distance."""
    return np.searchsorted(np.asarray(DISTANCE_BAND_EDGES_KM), distance_km, side="right").astype(np.int8)


def build_network(*, scenario: Scenario, rng: np.random.Generator) -> Network:
    """Draw the static network of a scenario."""
    zone_xy, zone_weight = _zones(scenario=scenario, rng=rng)
    n_skus = scenario.skus
    ranks = np.arange(1, n_skus + 1)
    popularity = 1.0 / ranks**1.05
    popularity /= popularity.sum()
    hazmat = rng.random(n_skus) < scenario.hazmat_share

    types, xy = _place_nodes(scenario=scenario, zone_xy=zone_xy, zone_weight=zone_weight, rng=rng)
    profiles = [scenario.node_types[NODE_TYPES[t]] for t in types]
    counters: dict[int, int] = {}
    node_ids = []
    for t in types:
        counters[t] = counters.get(t, 0) + 1
        node_ids.append(f"{NODE_PREFIX[NODE_TYPES[t]]}{counters[t]:02d}")
    coverage = _coverage(types=types, profiles=profiles, n_skus=n_skus, rng=rng)

    distance = np.linalg.norm(zone_xy[:, None, :] - xy[None, :, :], axis=2) * 1.25 + 8.0
    shipments_per_order, lines_per_order = _expected_load(
        scenario=scenario, coverage=coverage, distance=distance, zone_weight=zone_weight, popularity=popularity, rng=rng
    )
    mean_factor = float(np.mean(scenario.demand.weekday_factors)) * (
        1 + scenario.demand.growth_per_day * scenario.days / 2
    )
    daily_orders = scenario.demand.base_orders_per_day * mean_factor
    headroom = np.array([rng.uniform(*p.headroom) for p in profiles])
    capacity = np.maximum(shipments_per_order * daily_orders * headroom, 40.0)

    daily_units = lines_per_order * daily_orders * 1.2
    cover = np.array([p.cover_days for p in profiles])[:, None]
    target = np.ceil(daily_units * cover * rng.uniform(0.8, 1.2, size=daily_units.shape)) + 2
    target = np.where(coverage, target, 0).astype(np.int32)

    carriers = scenario.carriers
    cs_carrier, cs_service, cs_transit, cs_cost = [], [], [], []
    for c, spec in enumerate(carriers):
        # Each carrier delivers to a share of the regions, at lane prices of its own.
        served = rng.random(len(REGIONS)) < spec.regions_served
        served[rng.integers(0, len(REGIONS))] = True
        lane_price = rng.uniform(1 - spec.lane_cost_spread, 1 + spec.lane_cost_spread, size=len(REGIONS))
        for service in spec.services:
            s = SERVICES.index(service)
            transit = np.array(SERVICE_TRANSIT_DAYS[service])
            if service == "ground":
                transit = transit + spec.ground_extra_days
            cost = SERVICE_BASE_COST[service] * (1 + BAND_COST_STEP * np.arange(4)) * spec.cost_factor
            cs_carrier.append(c)
            cs_service.append(s)
            by_region = np.where(served[:, None] & (transit[None, :] >= 0), transit[None, :], -1)
            cs_transit.append(by_region)
            cs_cost.append(np.where(by_region >= 0, cost[None, :] * lane_price[:, None], np.inf))
    lane_logit = np.array(
        [spec.reliability_logit + rng.normal(0.0, spec.lane_spread, size=len(REGIONS)) for spec in carriers]
    )
    return Network(
        zone_ids=np.array([f"Z{i + 1:02d}" for i in range(len(zone_xy))]),
        zone_xy=zone_xy,
        zone_region=region_of(xy=zone_xy),
        zone_weight=zone_weight,
        node_ids=np.array(node_ids),
        node_type=types,
        node_xy=xy,
        node_region=region_of(xy=xy),
        node_cutoff_hour=np.array([p.cutoff_hour for p in profiles]),
        node_handling_days=np.array([p.handling_days for p in profiles]),
        node_handling_cost=np.array([p.handling_cost for p in profiles]),
        node_base_logit=np.array([p.base_late_logit for p in profiles]) + rng.normal(0.0, 0.25, size=len(types)),
        node_capacity=capacity,
        node_headroom=headroom,
        node_replenish_every=np.array([p.replenish_every_days for p in profiles]),
        node_replenish_offset=np.array([rng.integers(0, p.replenish_every_days) for p in profiles]),
        coverage=coverage,
        target_stock=target,
        sku_popularity=popularity,
        sku_hazmat=hazmat,
        distance_km=distance,
        band=distance_band(distance_km=distance),
        carrier_names=np.array([c.name for c in carriers]),
        carrier_reliability=np.array([c.reliability_logit for c in carriers]),
        cs_carrier=np.array(cs_carrier),
        cs_service=np.array(cs_service),
        cs_transit=np.array(cs_transit),
        cs_cost=np.array(cs_cost),
        lane_logit=lane_logit,
    )


def _zones(*, scenario: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Customer zones clustered around metros, with lognormal demand weights."""
    n_metros = max(1, scenario.zones // 5)
    metros = rng.uniform([100, 100], [MAP_WIDTH_KM - 100, MAP_HEIGHT_KM - 100], size=(n_metros, 2))
    home = rng.integers(0, n_metros, size=scenario.zones)
    xy = metros[home] + rng.normal(0.0, 120.0, size=(scenario.zones, 2))
    xy = np.clip(xy, [5, 5], [MAP_WIDTH_KM - 5, MAP_HEIGHT_KM - 5])
    weight = rng.lognormal(0.0, 0.8, size=scenario.zones)
    return xy, weight / weight.sum()


def _place_nodes(
    *, scenario: Scenario, zone_xy: np.ndarray, zone_weight: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Node types and positions: DCs spread over demand, stores in the busiest zones, others anywhere."""
    types: list[int] = []
    points: list[np.ndarray] = []
    by_weight = np.argsort(-zone_weight, kind="stable")
    for type_name, profile in scenario.node_types.items():
        t = NODE_TYPES.index(type_name)
        for i in range(profile.count):
            if type_name == "dc":
                # Farthest-point placement over weighted demand spreads DCs across the map.
                if not [p for p, k in zip(points, types) if k == t]:
                    point = zone_xy[by_weight[0]]
                else:
                    placed = np.array([p for p, k in zip(points, types) if k == t])
                    gap = np.linalg.norm(zone_xy[:, None, :] - placed[None, :, :], axis=2).min(axis=1)
                    point = zone_xy[np.argmax(gap * np.sqrt(zone_weight))]
            elif type_name == "store":
                point = zone_xy[by_weight[i % len(by_weight)]]
            else:
                point = (
                    zone_xy[rng.integers(0, len(zone_xy))]
                    if type_name == "3pl"
                    else rng.uniform([50, 50], [MAP_WIDTH_KM - 50, MAP_HEIGHT_KM - 50])
                )
            types.append(t)
            points.append(np.clip(point + rng.normal(0.0, 15.0, size=2), 1, [MAP_WIDTH_KM - 1, MAP_HEIGHT_KM - 1]))
    return np.array(types), np.array(points)


def _coverage(*, types: np.ndarray, profiles: list, n_skus: int, rng: np.random.Generator) -> np.ndarray:
    """Which SKUs each node carries: stores the popular head, vendors a block of the tail, DCs nearly all."""
    coverage = np.zeros((len(types), n_skus), dtype=bool)
    rank_share = np.arange(n_skus) / n_skus
    for n, (t, profile) in enumerate(zip(types, profiles)):
        kind = NODE_TYPES[t]
        if kind == "store":
            coverage[n] = (rank_share < profile.sku_coverage) & (rng.random(n_skus) < 0.9)
        elif kind == "dropship":
            width = int(profile.sku_coverage * n_skus)
            start = int(rng.integers(int(0.3 * n_skus), max(int(0.3 * n_skus) + 1, n_skus - width)))
            coverage[n, start : start + width] = True
        elif kind == "3pl":
            coverage[n] = rng.random(n_skus) < profile.sku_coverage * (1.4 - rank_share * 0.8)
        else:
            coverage[n] = rng.random(n_skus) < profile.sku_coverage
    orphans = ~coverage.any(axis=0)
    if orphans.any():
        carriers_of_last_resort = np.flatnonzero(types == NODE_TYPES.index("dc"))
        if carriers_of_last_resort.size == 0:
            carriers_of_last_resort = np.arange(len(types))
        coverage[rng.choice(carriers_of_last_resort, size=int(orphans.sum())), np.flatnonzero(orphans)] = True
    return coverage


def _expected_load(
    *,
    scenario: Scenario,
    coverage: np.ndarray,
    distance: np.ndarray,
    zone_weight: np.ndarray,
    popularity: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected shipments per node and lines per (node, sku) under nearest-node routing with full shelves."""
    samples = 20_000
    n_lines = rng.choice(4, size=samples, p=np.asarray(scenario.demand.lines_per_order)) + 1
    line_order = np.repeat(np.arange(samples), n_lines)
    zones = rng.choice(len(zone_weight), size=samples, p=zone_weight)
    skus = rng.choice(len(popularity), size=line_order.size, p=popularity)
    starts = np.r_[0, np.cumsum(n_lines)[:-1]]
    carries_all = np.logical_and.reduceat(coverage[:, skus].T, starts, axis=0)
    whole = np.where(carries_all, distance[zones], np.inf)
    has_whole = np.isfinite(whole).any(axis=1)
    per_line = np.argmin(np.where(coverage[:, skus].T, distance[zones[line_order]], np.inf), axis=1)
    line_node = np.where(has_whole[line_order], np.argmin(whole, axis=1)[line_order], per_line)
    shipments = np.zeros(coverage.shape[0])
    np.add.at(shipments, np.unique(line_order * coverage.shape[0] + line_node) % coverage.shape[0], 1.0)
    lines = np.zeros(coverage.shape, dtype=np.float64)
    np.add.at(lines, (line_node, skus), 1.0)
    # Spill-over stock: a node also holds a little of what it carries but is rarely nearest for.
    lines += coverage * popularity[None, :] * line_order.size * 0.05
    return shipments / samples, lines / samples
