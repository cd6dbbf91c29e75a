"""Backtest: replay a window of recorded decisions through two rulesets, with the same engine, and compare.

A twin history records, for every order's first routing decision, the candidate nodes with the
lines each could ship, the node's announced capacity and the load already assigned in that
decision wave, and the carriers' rate card. The replay rebuilds exactly those inputs and decides
them wave by wave under each ruleset, pricing risk with the same scores for both.

What a replay cannot know: the outcomes of choices the history never made (their lateness is the
models' expectation), nor how a different routing would
have changed later loads and congestion — every wave starts from the loads history recorded.
Running the twin forward under a ruleset answers that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.twin.network import distance_band
from features.twin.output import TRUTH_FOLDER, read_truth
from rules.batch import BatchDecisions, OrderBatch, decide_orders, weekday_of
from rules.engine import PriorScorer
from rules.errors import RulesError
from rules.schema import Ruleset

SECONDS_PER_DAY = 86_400
PLAN_KEYS = ("order_id", "node_id", "carrier", "service")
LIMITATIONS = (
    "A replay cannot observe outcomes of choices the history never made: their lateness here is the "
    "calibrated expectation of the risk it was priced with. Each decision wave starts from the node "
    "loads history recorded, so knock-on effects of different routing on later congestion are not "
    "replayed; run the twin forward for those."
)


@dataclass(frozen=True)
class Replay:
    """Recorded first decisions of a window's orders, as the engine's columns, in decision order."""

    batch: OrderBatch
    order_id: np.ndarray
    decided_at: np.ndarray
    order_wave: np.ndarray
    cand_region: np.ndarray
    cand_distance_km: np.ndarray
    opt_ship_by: np.ndarray

    def option_rows(self) -> dict[str, np.ndarray]:
        """Every option as a decision row for the feature definitions (what the risk models read)."""
        b = self.batch
        order = b.cand_order[b.opt_cand]
        return {
            "allocated_at": self.decided_at[order],
            "node_id": b.cand_node[b.opt_cand],
            "node_type": b.cand_node_type[b.opt_cand],
            "carrier": b.opt_carrier,
            "service": b.opt_service,
            "origin_region": self.cand_region[b.opt_cand],
            "dest_region": b.order_dest_region[order],
            "distance_km": self.cand_distance_km[b.opt_cand],
            "ship_by": self.opt_ship_by,
            "promised_delivery": (b.order_promised_day[order]).astype("datetime64[D]").astype("datetime64[s]"),
        }


def load_replay(
    *, folder: Path, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None, max_orders: int | None = None
) -> Replay:
    """The recorded first decisions of orders decided in [start, end) (the newest max_orders of them)."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise RulesError(f"{folder}: not a twin history (no manifest.json); a replay needs recorded candidates")
    waves = int(json.loads(manifest_path.read_text())["scenario"].get("decision_waves_per_day", 6))
    candidates = pd.read_parquet(folder / "candidates.parquet")
    candidates = candidates[candidates["attempt"] == 1]
    decided = candidates.groupby("order_id", observed=True)["decision_time"].first()
    if start is not None:
        decided = decided[decided >= start]
    if end is not None:
        decided = decided[decided < end]
    decided = decided.sort_values(kind="stable")
    if max_orders is not None:
        decided = decided.tail(max_orders)
    if decided.empty:
        raise RulesError(f"{folder}: no recorded decisions in the window {start} .. {end}")
    orders = pd.read_parquet(folder / "orders.parquet").set_index("order_id").loc[decided.index.astype(str)]
    n = len(orders)
    position = pd.Series(np.arange(n), index=orders.index)
    seconds = decided.to_numpy(dtype="datetime64[s]").astype(np.int64)
    order_seconds = orders["order_time"].to_numpy(dtype="datetime64[s]").astype(np.int64)
    order_wave = (order_seconds // SECONDS_PER_DAY) * waves + (
        order_seconds % SECONDS_PER_DAY
    ) * waves // SECONDS_PER_DAY

    lines = pd.read_parquet(folder / "order_lines.parquet")
    line_order = _positions(column=lines["order_id"], position=position)
    lines, line_order = lines[line_order >= 0], line_order[line_order >= 0]
    n_units = orders["n_lines"].to_numpy(dtype=np.int64)
    width = int(n_units.max())
    quantity = np.zeros((n, width), dtype=np.int64)
    hazmat = np.zeros((n, width), dtype=bool)
    quantity[line_order, lines["line_no"].to_numpy()] = lines["qty"].to_numpy()
    hazmat[line_order, lines["line_no"].to_numpy()] = lines["hazmat"].to_numpy()

    nodes = pd.read_parquet(folder / "nodes.parquet").set_index("node_id")
    cand_order = _positions(column=candidates["order_id"], position=position)
    cands = candidates[cand_order >= 0].copy()
    cands["order"] = cand_order[cand_order >= 0]
    cands["node_id"] = cands["node_id"].astype(str)
    cands = cands.sort_values(["order", "node_id"], kind="stable").reset_index(drop=True)
    node = nodes.loc[cands["node_id"]]
    cand_seconds = seconds[cands["order"].to_numpy()]
    day = cand_seconds // SECONDS_PER_DAY
    hour = (cand_seconds % SECONDS_PER_DAY) / 3600.0
    ship_by_day = day + node["handling_days"].to_numpy() + (hour >= node["cutoff_hour"].to_numpy())
    ship_by = ship_by_day * SECONDS_PER_DAY + node["cutoff_hour"].to_numpy() * 3600

    state = pd.read_parquet(folder / "node_waves.parquet")
    state_key = state["date"].to_numpy(dtype="datetime64[D]").astype(np.int64) * waves + state["wave"].to_numpy()
    state = state.assign(key=state_key, node_id=state["node_id"].astype(str)).set_index(["key", "node_id"])
    at = pd.MultiIndex.from_arrays([order_wave[cands["order"].to_numpy()], cands["node_id"]])
    recorded = state.reindex(at)

    services = pd.read_parquet(folder / "services.parquet")
    dest = orders["dest_region"].astype(str).to_numpy()
    cands["dest_region"] = dest[cands["order"].to_numpy()]
    cands["distance_band"] = distance_band(distance_km=cands["distance_km"].to_numpy())
    cands["cand"] = np.arange(len(cands))
    options = cands[["cand", "dest_region", "distance_band"]].merge(
        services, on=["dest_region", "distance_band"], how="inner", sort=False
    )
    options = options.sort_values(["cand", "carrier", "service"], kind="stable").reset_index(drop=True)
    opt_cand = options["cand"].to_numpy(dtype=np.int64)

    batch = OrderBatch(
        order_tier=orders["customer_tier"].astype(str).to_numpy(dtype=object),
        order_dest_region=dest.astype(object),
        order_promised_day=orders["promised_delivery"].to_numpy(dtype="datetime64[D]").astype(np.int64),
        order_n_units=n_units,
        unit_quantity=quantity,
        unit_hazmat=hazmat,
        cand_order=cands["order"].to_numpy(dtype=np.int64),
        cand_node=cands["node_id"].to_numpy(dtype=object),
        cand_node_type=node["node_type"].astype(str).to_numpy(dtype=object),
        cand_handling_cost=node["handling_cost"].to_numpy(dtype=np.float64),
        cand_supply=cands["lines_available"].to_numpy(dtype=np.int64),
        cand_capacity=recorded["capacity"].to_numpy(dtype=np.float64),
        cand_assigned=recorded["assigned_so_far"].fillna(0).to_numpy(dtype=np.float64),
        opt_cand=opt_cand,
        opt_carrier=options["carrier"].astype(str).to_numpy(dtype=object),
        opt_service=options["service"].astype(str).to_numpy(dtype=object),
        opt_cost=options["cost"].to_numpy(dtype=np.float64),
        opt_transit_days=options["transit_days"].to_numpy(dtype=np.int64),
        opt_ship_by_day=ship_by_day[opt_cand].astype(np.int64),
        opt_excluded=np.zeros(len(options), dtype=bool),
        order_weekday=weekday_of(seconds),
    )
    return Replay(
        batch=batch,
        order_id=orders.index.to_numpy(dtype=object),
        decided_at=seconds.astype("datetime64[s]"),
        order_wave=order_wave - order_wave.min(),
        cand_region=node["region"].astype(str).to_numpy(dtype=object),
        cand_distance_km=cands["distance_km"].to_numpy(dtype=np.float64),
        opt_ship_by=ship_by[opt_cand].astype("datetime64[s]"),
    )


def _positions(*, column: pd.Series, position: pd.Series) -> np.ndarray:
    """Each row's order position (-1 for orders outside the replay), looked up once per distinct order id."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        table = position.reindex(column.cat.categories.astype(str)).fillna(-1).to_numpy(dtype=np.int64)
        codes = column.cat.codes.to_numpy()
        return np.where(codes >= 0, table[codes], -1)
    return position.reindex(column.astype(str)).fillna(-1).to_numpy(dtype=np.int64)


@dataclass(frozen=True)
class Risk:
    """Per option of a replay: P(carrier delay), P(node congestion), and where they came from."""

    carrier_delay: np.ndarray
    node_congestion: np.ndarray
    source: str


@dataclass
class Outcome:
    """What one ruleset did with the replayed orders."""

    ruleset: str
    ruleset_hash: str
    orders: int
    routed: int
    expected_on_time: float
    cost_per_order: float
    objective_per_order: float
    split_rate: float
    decisions: BatchDecisions = field(repr=False)
    shipments: pd.DataFrame = field(repr=False)

    def figures(self) -> dict:
        """The headline figures."""
        return {
            "ruleset": self.ruleset,
            "ruleset_hash": self.ruleset_hash,
            "orders": self.orders,
            "routed": self.routed,
            "expected_on_time": round(self.expected_on_time, 5),
            "cost_per_order": round(self.cost_per_order, 4),
            "objective_per_order": round(self.objective_per_order, 4),
            "split_rate": round(self.split_rate, 5),
        }


def prior_risk(
    *, replay: Replay, carrier_delay: dict[str, float] | None = None, node_congestion: dict[str, float] | None = None
) -> Risk:
    """Rules-only risk: a fixed prior per carrier and per node type (what deciding without models means)."""
    priors = PriorScorer(carrier_delay=carrier_delay, node_congestion=node_congestion)
    b = replay.batch
    delay, congestion = priors.priors(carriers=b.opt_carrier, node_types=b.cand_node_type[b.opt_cand])
    return Risk(carrier_delay=delay, node_congestion=congestion, source="rules-only priors")


def replay_ruleset(*, replay: Replay, ruleset: Ruleset, risk: Risk) -> Outcome:
    """Decide the replayed orders under one ruleset and measure the result."""
    b = replay.batch
    decisions = decide_orders(
        batch=b,
        ruleset=ruleset,
        p_carrier=risk.carrier_delay,
        p_congestion=risk.node_congestion,
        order_wave=replay.order_wave,
    )
    used = decisions.chosen_option >= 0
    rows = decisions.chosen_option[used]
    order = np.repeat(np.arange(b.n_orders), decisions.chosen_option.shape[1])[used.ravel()]
    mask = decisions.chosen_mask[used]
    units = (b.unit_quantity[order] * ((mask[:, None] >> np.arange(b.unit_quantity.shape[1])) & 1)).sum(axis=1)
    handling = b.cand_handling_cost[b.opt_cand[rows]] * (1 + ruleset.scoring.handling_per_extra_unit * (units - 1))
    shipments = pd.DataFrame(
        {
            "order": order,
            "node_id": b.cand_node[b.opt_cand[rows]],
            "carrier": b.opt_carrier[rows],
            "service": b.opt_service[rows],
            "dest_region": b.order_dest_region[order],
            "wave": replay.order_wave[order],
            "cost": b.opt_cost[rows] + handling,
            "p_late": decisions.option_p_late[rows],
            "capacity": b.cand_capacity[b.opt_cand[rows]],
            "option": rows,
        }
    )
    routed = np.isfinite(decisions.chosen_total)
    on_time = np.ones(b.n_orders)
    np.multiply.at(on_time, order, 1.0 - shipments["p_late"].to_numpy())
    per_order = np.bincount(order, minlength=b.n_orders)
    return Outcome(
        ruleset=ruleset.name,
        ruleset_hash=ruleset.content_hash(),
        orders=b.n_orders,
        routed=int(routed.sum()),
        expected_on_time=float(on_time[routed].mean()) if routed.any() else float("nan"),
        cost_per_order=float(shipments["cost"].sum() / max(routed.sum(), 1)),
        objective_per_order=float(decisions.chosen_total[routed].mean()) if routed.any() else float("nan"),
        split_rate=float((per_order[routed] > 1).mean()) if routed.any() else float("nan"),
        decisions=decisions,
        shipments=shipments,
    )


def recorded_truth(*, folder: Path) -> pd.DataFrame | None:
    """The twin's true probabilities of each recorded first-attempt shipment, by plan (None off the twin)."""
    if not (folder / TRUTH_FOLDER).is_dir():
        return None
    columns = ["shipment_id", "order_id", "node_id", "carrier", "service", "attempt"]
    shipments = pd.read_parquet(folder / "shipments.parquet", columns=columns)
    first = shipments[shipments["attempt"] == 1].drop(columns=["attempt"])
    truth = read_truth(folder=folder)[["shipment_id", "p_true_late_handover", "p_true_carrier_delay"]]
    merged = first.merge(truth, on="shipment_id").drop(columns=["shipment_id"])
    for key in PLAN_KEYS:
        merged[key] = merged[key].astype(str)
    return merged.drop_duplicates(subset=list(PLAN_KEYS))


def truth_figures(*, replay: Replay, outcome: Outcome, truth: pd.DataFrame) -> dict:
    """Expected vs the twin's true on-time rate, on the shipments this ruleset plans exactly as history did.

    The twin knows the true probabilities only of shipments that happened, so the comparison covers
    those (`known_share` of this ruleset's shipments); it measures how far the models' expectation
    is from the truth, not what changed decisions would truly have done.
    """
    s = outcome.shipments
    plans = pd.DataFrame(
        {
            "order_id": replay.order_id[s["order"].to_numpy()].astype(str),
            "node_id": s["node_id"].astype(str).to_numpy(),
            "carrier": s["carrier"].astype(str).to_numpy(),
            "service": s["service"].astype(str).to_numpy(),
            "p_late": s["p_late"].to_numpy(),
        }
    ).merge(truth, on=list(PLAN_KEYS), how="left")
    known = plans["p_true_carrier_delay"].notna().to_numpy()
    if not known.any():
        return {"known_share": 0.0, "expected_on_time": None, "true_on_time": None, "gap": None}
    seen = plans[known]
    expected = float((1.0 - seen["p_late"]).mean())
    true = float(((1.0 - seen["p_true_carrier_delay"]) * (1.0 - seen["p_true_late_handover"])).mean())
    return {
        "known_share": round(float(known.mean()), 5),
        "expected_on_time": round(expected, 5),
        "true_on_time": round(true, 5),
        "gap": round(expected - true, 5),
    }


def compare(*, replay: Replay, old: Outcome, new: Outcome, sample: int = 10, truth: pd.DataFrame | None = None) -> dict:
    """How the new ruleset's decisions differ from the old one's: overall, per lane, per node, and a sample.

    With the twin's truth (`recorded_truth`), each side also gets its expected vs true on-time rate.
    """
    b = replay.batch

    def plan_keys(outcome: Outcome) -> np.ndarray:
        keys = outcome.shipments.assign(key=lambda f: f["node_id"] + "/" + f["carrier"] + "/" + f["service"])
        joined = keys.sort_values(["order", "key"]).groupby("order")["key"].agg("|".join)
        return joined.reindex(np.arange(b.n_orders)).fillna("").to_numpy()

    changed = plan_keys(old) != plan_keys(new)
    lanes = _effects(old=old.shipments, new=new.shipments, by=["carrier", "dest_region"])
    nodes = _effects(old=old.shipments, new=new.shipments, by=["node_id"])
    days = max(len(np.unique(replay.order_wave)), 1)
    for name, outcome in (("old", old), ("new", new)):
        per_node = outcome.shipments.groupby("node_id").agg(shipments=("order", "size"), capacity=("capacity", "mean"))
        nodes[f"utilisation_{name}"] = (per_node["shipments"] / days / per_node["capacity"]).reindex(nodes.index)
    examples = []
    for o in np.flatnonzero(changed)[:sample]:
        examples.append(
            {
                "order_id": str(replay.order_id[o]),
                "old": _trace(replay=replay, outcome=old, order=o),
                "new": _trace(replay=replay, outcome=new, order=o),
            }
        )
    return {
        "orders": int(b.n_orders),
        "window": [str(replay.decided_at.min()), str(replay.decided_at.max())],
        "old": old.figures(),
        "new": new.figures(),
        "changed_share": round(float(changed.mean()), 5),
        "lanes": _records(lanes),
        "nodes": _records(nodes),
        "sample": examples,
        "limitations": LIMITATIONS,
        "truth": None
        if truth is None
        else {side: truth_figures(replay=replay, outcome=o, truth=truth) for side, o in (("old", old), ("new", new))},
    }


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as plain dicts, a missing figure as None (JSON, and so PostgreSQL, has no NaN)."""
    flat = frame.reset_index()
    return flat.astype(object).where(flat.notna(), None).to_dict("records")


def _effects(*, old: pd.DataFrame, new: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Shipments and expected late rate per group, before and after, largest moves first."""
    a = old.groupby(by).agg(shipments_old=("order", "size"), late_old=("p_late", "mean"))
    b = new.groupby(by).agg(shipments_new=("order", "size"), late_new=("p_late", "mean"))
    both = a.join(b, how="outer").fillna({"shipments_old": 0, "shipments_new": 0})
    both["shipments_change"] = both["shipments_new"] - both["shipments_old"]
    return both.sort_values("shipments_change", key=np.abs, ascending=False).round(5)


def _trace(*, replay: Replay, outcome: Outcome, order: int) -> dict:
    """One order's options under one ruleset: eligible or the rule that excluded it, P(late), price alone."""
    b = replay.batch
    d = outcome.decisions
    rows = np.flatnonzero(b.cand_order[b.opt_cand] == order)
    chosen = set(d.chosen_option[order][d.chosen_option[order] >= 0].tolist())
    return {
        "total": None if not np.isfinite(d.chosen_total[order]) else round(float(d.chosen_total[order]), 4),
        "options": [
            {
                "node_id": str(b.cand_node[b.opt_cand[r]]),
                "carrier": str(b.opt_carrier[r]),
                "service": str(b.opt_service[r]),
                "excluded_by": None if d.option_rule[r] < 0 else d.rule_names[d.option_rule[r]],
                "p_late": round(float(d.option_p_late[r]), 5),
                "price_alone": round(float(d.option_total_alone[r]), 4),
                "chosen": r in chosen,
            }
            for r in rows
        ],
    }
