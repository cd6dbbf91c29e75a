"""Outcome events: the stream OMS, WMS and carriers send, and how a history unfolds into it.

Event types: allocated, handed_over, delivered, exception (shipment events); node_capacity (a
node's capacity and backlog at the start of a day); disruption_notice (an announced disruption).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.history import History
from features.schema import EVENT_COLUMNS, EVENT_TYPES, PLAN_COLUMNS


def events_from_history(*, history: History) -> pd.DataFrame:
    """Every event a history implies, in the order they happened."""
    s = history.shipments
    shipment_columns = ("shipment_id", *PLAN_COLUMNS)
    base = s[[c for c in shipment_columns if c in s.columns]]
    parts = [base.assign(event_type="allocated", event_time=s["allocated_at"])]
    handed = s["handed_over_at"].notna()
    parts.append(base[handed].assign(event_type="handed_over", event_time=s.loc[handed, "handed_over_at"]))
    delivered = s["delivered_at"].notna()
    parts.append(base[delivered].assign(event_type="delivered", event_time=s.loc[delivered, "delivered_at"]))
    if "exception_codes" in s.columns:
        raised = s["exception_codes"].notna() & s["exception_at"].notna()
        codes = s.loc[raised, "exception_codes"].str.split("|", regex=False)
        exploded = (
            base[raised]
            .assign(exception_code=codes, event_time=s.loc[raised, "exception_at"])
            .explode("exception_code")
        )
        parts.append(exploded.assign(event_type="exception"))
    if history.node_days is not None:
        nd = history.node_days
        parts.append(
            pd.DataFrame(
                {
                    "event_type": "node_capacity",
                    "event_time": nd["date"],
                    "node_id": nd["node_id"],
                    "capacity": nd["capacity"],
                    "backlog_start": nd["backlog_start"],
                }
            )
        )
    if history.notices is not None and not history.notices.empty:
        n = history.notices
        parts.append(
            pd.DataFrame(
                {
                    "event_type": "disruption_notice",
                    "event_time": n["announced_at"],
                    "carrier": n["carrier"],
                    "region": n["region"],
                    "severity": n["severity"],
                    "start": n["start"],
                    "end": n["end"],
                }
            )
        )
    events = pd.concat(parts, ignore_index=True)
    events["event_time"] = events["event_time"].astype("datetime64[s]")
    events["type_order"] = events["event_type"].map({t: i for i, t in enumerate(EVENT_TYPES)})
    events = events.sort_values(["event_time", "type_order"], kind="stable").reset_index(drop=True)
    suffix = np.where(events["shipment_id"].notna(), events["shipment_id"].astype("str"), events.index.astype("str"))
    detail = events["exception_code"].fillna("").astype("str") if "exception_code" in events else ""
    events["event_id"] = events["event_type"] + ":" + suffix + np.where(detail != "", ":" + detail, "")
    for column in EVENT_COLUMNS:
        if column not in events.columns:
            events[column] = None
    return events[list(EVENT_COLUMNS)]
