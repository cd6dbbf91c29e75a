"""The Olist adapter: the public Brazilian marketplace export mapped into the history schema.

Orders become shipments. Where the order-items sample names the seller, each (order, seller) is
one shipment from that seller (the node) with its ship-by promise; elsewhere the seller is unknown.
The marketplace used mostly one national carrier, so carrier and service are constants. Rows
that cannot be a truthful history row are dropped and counted by reason, never silently kept;
orders shipped but never delivered are kept (and counted): they are late outcomes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import HistoryError
from features.history import History, LoadReport, read_table
from features.schema import validate_shipments

ORDERS_FILE = "olist_orders_dataset.csv"
ITEMS_FILE = "olist_order_items_sample.csv"
SELLERS_FILE = "olist_sellers_dataset.csv"
ITEMS_TIME_FORMAT = "%m/%d/%Y %H:%M"
ORDERS_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
CARRIER = "national"
SERVICE = "ground"
NODE_TYPE = "dropship"
UNKNOWN_SELLER = "unknown-seller"


def _parse(frame: pd.DataFrame, column: str, fmt: str) -> pd.Series:
    """Parse one timestamp column; empty stays NaT."""
    return pd.to_datetime(frame[column], format=fmt, errors="coerce").astype("datetime64[s]")


def load_olist(*, folder: Path) -> tuple[History, LoadReport]:
    """Read the Olist export from a folder and map it into a validated shipment history."""
    if not folder.is_dir():
        raise HistoryError(f"{folder}: no such folder (expected the Olist files {ORDERS_FILE}, {ITEMS_FILE})")
    missing = [name for name in (ORDERS_FILE, ITEMS_FILE, SELLERS_FILE) if not (folder / name).exists()]
    if missing:
        raise HistoryError(f"{folder}: missing Olist file(s): {', '.join(missing)}")
    orders = read_table(path=folder / ORDERS_FILE)
    items = read_table(path=folder / ITEMS_FILE)
    sellers = read_table(path=folder / SELLERS_FILE)
    report = LoadReport(source=str(folder / ORDERS_FILE), rows_read=len(orders))

    times = {
        column: _parse(orders, column, ORDERS_TIME_FORMAT)
        for column in (
            "order_purchase_timestamp",
            "order_approved_at",
            "order_delivered_carrier_date",
            "order_delivered_customer_date",
            "order_estimated_delivery_date",
        )
    }
    reasons = pd.Series(pd.NA, index=orders.index, dtype="object")

    def drop(mask: pd.Series, reason: str) -> None:
        reasons.loc[mask & reasons.isna()] = reason

    status = orders["order_status"]
    drop(status == "canceled", "order canceled")
    drop(status == "unavailable", "order unavailable")
    shipped = status == "shipped"
    drop(~status.isin(["delivered", "canceled", "unavailable", "shipped"]), "not shipped yet (still processing)")
    drop(times["order_purchase_timestamp"].isna(), "no purchase time")
    drop(times["order_approved_at"].isna(), "no approval time")
    drop(times["order_delivered_carrier_date"].isna(), "no handover time")
    drop(~shipped & times["order_delivered_customer_date"].isna(), "delivered without a delivery time")
    drop(times["order_estimated_delivery_date"].isna(), "no promised delivery date")
    drop(times["order_delivered_carrier_date"] < times["order_purchase_timestamp"], "handed to carrier before purchase")
    drop(times["order_delivered_carrier_date"] < times["order_approved_at"], "handed to carrier before approval")
    drop(times["order_delivered_customer_date"] < times["order_delivered_carrier_date"], "delivered before handover")

    kept = reasons.isna()
    # Shipped and never delivered is an outcome, not noise: late once the promised day has passed.
    never_delivered = int((kept & shipped).sum())
    if never_delivered:
        report.kept_notes["shipped but never delivered (kept: late once the promise lapsed)"] = never_delivered
    base = pd.DataFrame(
        {
            "order_id": orders.loc[kept, "order_id"].astype("str"),
            "order_time": times["order_purchase_timestamp"][kept],
            "allocated_at": times["order_approved_at"][kept],
            "promised_delivery": times["order_estimated_delivery_date"][kept].dt.normalize(),
            "handed_over_at": times["order_delivered_carrier_date"][kept],
            "delivered_at": times["order_delivered_customer_date"][kept],
        }
    )
    shipments = _split_by_seller(base=base, items=items, sellers=sellers)
    coerced, validation = validate_shipments(frame=shipments)
    if validation.missing_columns:
        raise HistoryError(f"{folder}: the Olist mapping lost column(s) {validation.missing_columns}")
    if validation.problems:
        for reason, count in validation.counts_by_reason().items():
            report.dropped_by_reason[f"schema: {reason}"] = count
        coerced = coerced.drop(index=validation.bad_rows()).reset_index(drop=True)
    counts = reasons.dropna().value_counts()
    report.dropped_by_reason = {**{str(k): int(v) for k, v in counts.items()}, **report.dropped_by_reason}
    report.rows_kept = len(coerced)
    coerced = coerced.sort_values("allocated_at", kind="stable").reset_index(drop=True)
    return History(shipments=coerced, source=str(folder)), report


def _split_by_seller(*, base: pd.DataFrame, items: pd.DataFrame, sellers: pd.DataFrame) -> pd.DataFrame:
    """One shipment per (order, seller) where the items sample names the seller; one per order elsewhere."""
    items = items.assign(
        ship_by=_parse(items, "shipping_limit_date", ITEMS_TIME_FORMAT),
        freight=pd.to_numeric(items["freight_value"], errors="coerce"),
    )
    per_seller = (
        items.groupby(["order_id", "seller_id"], sort=True)
        .agg(ship_by=("ship_by", "min"), cost=("freight", "sum"))
        .reset_index()
    )
    state = sellers.set_index("seller_id")["seller_state"]
    per_seller["origin_region"] = per_seller["seller_id"].map(state)
    known = base.merge(per_seller, on="order_id", how="inner")
    known["shipment_id"] = known["order_id"] + ":" + known["seller_id"].str[:8]
    known = known.rename(columns={"seller_id": "node_id"})
    unknown = base[~base["order_id"].isin(per_seller["order_id"])].copy()
    unknown["shipment_id"] = unknown["order_id"]
    unknown["node_id"] = UNKNOWN_SELLER
    unknown["ship_by"] = pd.Series(np.datetime64("NaT", "s"), index=unknown.index, dtype="datetime64[s]")
    unknown["cost"] = np.nan
    unknown["origin_region"] = None
    frame = pd.concat([known, unknown], ignore_index=True)
    frame["node_type"] = NODE_TYPE
    frame["carrier"] = CARRIER
    frame["service"] = SERVICE
    frame["dest_region"] = None
    frame["distance_km"] = np.nan
    return frame
