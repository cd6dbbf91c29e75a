"""Turning a twin run's collected arrays into the history frames it writes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.schema import EXCEPTION_CODES, NODE_TYPES, SERVICES, TIERS
from features.twin.network import REGIONS, Network
from features.twin.policy import SECONDS_PER_DAY
from features.twin.scenario import Scenario

# Exception codes as the twin numbers them: 0 is none.
TWIN_EXCEPTION_CODES = ("", *EXCEPTION_CODES)


@dataclass
class SimulationResult:
    """Everything a twin run produces, as frames ready to write."""

    shipments: pd.DataFrame
    truth: pd.DataFrame
    orders: pd.DataFrame
    order_lines: pd.DataFrame
    candidates: pd.DataFrame
    node_waves: pd.DataFrame
    node_days: pd.DataFrame
    notices: pd.DataFrame
    disruptions: pd.DataFrame
    network: Network
    stats: dict = field(default_factory=dict)


@dataclass
class RunBuffers:
    """Per-day arrays a run collects until it ends."""

    shipments: list[dict] = field(default_factory=list)
    orders: list[dict] = field(default_factory=list)
    lines: list[dict] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)
    node_waves: list[dict] = field(default_factory=list)
    node_days: list[dict] = field(default_factory=list)


def _timestamps(*, seconds: np.ndarray, missing: np.ndarray | None = None) -> pd.Series:
    """Epoch seconds as naive-UTC datetimes, NaT where missing."""
    values = seconds.astype("datetime64[s]")
    if missing is not None:
        values = np.where(missing, np.datetime64("NaT", "s"), values)
    return pd.Series(values, dtype="datetime64[s]")


def _labels(*, names: np.ndarray | tuple, codes: np.ndarray) -> pd.Series:
    """Codes mapped to their names as a string column."""
    return pd.Series(np.asarray(names, dtype=object)[codes], dtype="str")


def _ids(*, prefix: str, seq: np.ndarray, width: int) -> pd.Series:
    """Zero-padded string ids such as S000000042."""
    return prefix + pd.Series(seq, dtype="int64").astype("str").str.zfill(width)


def _gather(parts: list[dict]) -> dict:
    """Concatenate a list of per-day dicts of arrays."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def shipments_frame(*, arrays: dict, network: Network) -> pd.DataFrame:
    """Shipment arrays of a run (one day's, or all) as history rows."""
    net, s = network, arrays
    shipment_id = _ids(prefix="S", seq=s["seq"], width=9)
    exception_names = np.asarray(TWIN_EXCEPTION_CODES, dtype=object)[s["exception"]]
    return pd.DataFrame(
        {
            "shipment_id": shipment_id,
            "order_id": _ids(prefix="O", seq=s["order_seq"], width=8),
            "order_time": _timestamps(seconds=s["order_time"]),
            "allocated_at": _timestamps(seconds=s["allocated_at"]),
            "node_id": _labels(names=net.node_ids, codes=s["node"]),
            "node_type": _labels(names=NODE_TYPES, codes=net.node_type[s["node"]]),
            "carrier": _labels(names=net.carrier_names, codes=s["carrier"]),
            "service": _labels(names=SERVICES, codes=s["service"]),
            "origin_region": _labels(names=REGIONS, codes=net.node_region[s["node"]]),
            "dest_region": _labels(names=REGIONS, codes=s["region"]),
            "dest_zone": _labels(names=net.zone_ids, codes=s["zone"]),
            "distance_km": s["distance_km"].round(1),
            "ship_by": _timestamps(seconds=s["ship_by"]),
            "promised_delivery": _timestamps(seconds=s["promised_day"] * SECONDS_PER_DAY),
            "handed_over_at": _timestamps(seconds=s["handed_over_at"], missing=s["handed_over_at"] < 0),
            "delivered_at": _timestamps(seconds=s["delivered_at"], missing=s["delivered_at"] < 0),
            "exception_codes": pd.Series(np.where(s["exception"] > 0, exception_names, None), dtype="str"),
            "exception_at": _timestamps(seconds=s["exception_at"], missing=s["exception"] == 0),
            "cost": s["cost"].round(2),
            "customer_tier": _labels(names=TIERS, codes=s["tier"]),
            "lines": s["lines"].astype(np.int16),
            "units": s["units"].astype(np.int32),
            "hazmat": s["hazmat"],
            "attempt": s["attempt"],
        }
    )


def assemble(
    *,
    buffers: RunBuffers,
    network: Network,
    scenario: Scenario,
    disruption_list: list[dict],
    unfilled_lines: int,
) -> SimulationResult:
    """Turn a run's buffers into the history frames."""
    net = network
    s = _gather(buffers.shipments)
    shipments = shipments_frame(arrays=s, network=net)
    shipment_id = shipments["shipment_id"]
    truth = pd.DataFrame(
        {"shipment_id": shipment_id}
        | {
            name: s[name]
            for name in (
                "p_true_late_handover",
                "p_true_carrier_delay",
                "p_decision_late_handover",
                "p_decision_carrier_delay",
            )
        }
    )
    o = _gather(buffers.orders)
    orders = pd.DataFrame(
        {
            "order_id": _ids(prefix="O", seq=o["seq"], width=8),
            "order_time": _timestamps(seconds=o["order_time"]),
            "dest_zone": _labels(names=net.zone_ids, codes=o["zone"]),
            "dest_region": _labels(names=REGIONS, codes=net.zone_region[o["zone"]]),
            "customer_tier": _labels(names=TIERS, codes=o["tier"]),
            "service_promised": _labels(names=SERVICES, codes=o["service"]),
            "promised_delivery": _timestamps(seconds=o["promised_day"] * SECONDS_PER_DAY),
            "n_lines": o["n_lines"].astype(np.int8),
        }
    )
    order_ids = orders["order_id"].to_numpy(dtype=object)
    first_seq = int(o["seq"][0]) if len(o) else 0
    ln = _gather(buffers.lines)
    sku_names = np.array([f"K{i:05d}" for i in range(len(net.sku_popularity))], dtype=object)
    order_lines = pd.DataFrame(
        {
            "order_id": pd.Categorical.from_codes(ln["order_seq"] - first_seq, categories=order_ids),
            "line_no": ln["line_no"].astype(np.int8),
            "sku": pd.Categorical.from_codes(ln["sku"], categories=sku_names),
            "qty": ln["qty"].astype(np.int16),
            "hazmat": net.sku_hazmat[ln["sku"]],
        }
    )
    c = _gather(buffers.candidates)
    candidates = pd.DataFrame(
        {
            "order_id": pd.Categorical.from_codes(c["order_seq"] - first_seq, categories=order_ids),
            "attempt": c["attempt"],
            "decision_time": _timestamps(seconds=c["decision_time"]),
            "node_id": pd.Categorical.from_codes(c["node"], categories=net.node_ids),
            "lines_available": c["lines_available"],
            "distance_km": c["distance_km"].round(1),
        }
    )
    start = np.datetime64(scenario.start_date, "D")
    w = _gather(buffers.node_waves)
    node_waves = pd.DataFrame(
        {
            "date": pd.Series((start + w["day"]).astype("datetime64[s]"), dtype="datetime64[s]"),
            "wave": w["wave"],
            "node_id": _labels(names=net.node_ids, codes=w["node"]),
            "capacity": w["capacity"].round(1),
            "assigned_so_far": w["assigned_so_far"].astype(np.int32),
            "backlog_start": w["backlog_start"].round(1),
            "expected_load": w["expected_load"].round(1),
        }
    )
    d = _gather(buffers.node_days)
    node_days = pd.DataFrame(
        {
            "date": pd.Series((start + d["day"]).astype("datetime64[s]"), dtype="datetime64[s]"),
            "node_id": _labels(names=net.node_ids, codes=d["node"]),
            "capacity": d["capacity"].round(1),
            "backlog_start": d["backlog_start"].round(1),
            "assigned": d["assigned"].astype(np.int32),
            "processed": d["processed"].round(1),
        }
    )
    disruptions = pd.DataFrame(
        [
            {
                "kind": item["kind"],
                "carrier": None if item["carrier"] < 0 else str(net.carrier_names[item["carrier"]]),
                "region": REGIONS[region],
                "start": (start + item["start_day"]).astype("datetime64[s]"),
                "end": (start + item["end_day"]).astype("datetime64[s]"),
                "severity": round(item["severity"], 3),
                "announced": item["announced"],
                "known_at": (start + item["known_day"]).astype("datetime64[s]"),
            }
            for item in disruption_list
            for region in item["regions"]
        ],
        columns=["kind", "carrier", "region", "start", "end", "severity", "announced", "known_at"],
    )
    for column in ("start", "end", "known_at"):
        disruptions[column] = disruptions[column].astype("datetime64[s]")
    for column in ("kind", "carrier", "region"):
        disruptions[column] = disruptions[column].astype("str")
    disruptions["announced"] = disruptions["announced"].astype(bool)
    disruptions["severity"] = disruptions["severity"].astype(float)
    notices = (
        disruptions[disruptions["announced"]]
        .drop(columns=["announced"])
        .rename(columns={"known_at": "announced_at"})
        .sort_values(["announced_at", "start", "region"], kind="stable")
        .reset_index(drop=True)
    )
    stats = {
        "orders": int(len(orders)),
        "shipments": int(len(shipments)),
        "unfilled_lines": int(unfilled_lines),
        "disruptions": int(len(disruption_list)),
    }
    return SimulationResult(
        shipments=shipments,
        truth=truth,
        orders=orders,
        order_lines=order_lines,
        candidates=candidates,
        node_waves=node_waves,
        node_days=node_days,
        notices=notices,
        disruptions=disruptions,
        network=net,
        stats=stats,
    )
