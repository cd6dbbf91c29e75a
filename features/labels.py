"""The two labels and, for each, the moment its outcome becomes known.

carrier delay = not delivered by the end of the promised delivery day (compared by calendar day);
node congestion = not handed to the carrier by the ship-by time (late handover).

An outcome is known at the earliest moment an observer could be sure of it:
- handover: on time when the parcel is handed over; late one second after the ship-by time passes
  without a handover. A shipment cancelled at pick (node rejected, short pick) before that moment
  has no handover outcome.
- delivery: on time when delivered; late when the promised day has ended undelivered, but never
  before the carrier has the parcel (a carrier cannot be late with a parcel it does not hold).
Outcomes still open at the end of the history (`as_of`) are unknown. Features may use an outcome
only at times strictly after it became known; the online state derives the same moments from
events and timers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import PICK_FAILURE_CODES

ONE_DAY = np.timedelta64(1, "D")
ONE_SECOND = np.timedelta64(1, "s")
NAT = np.datetime64("NaT", "s")
CARRIER_EXCEPTION_CODES = ("lost", "damaged", "address_problem")


def seconds(column: pd.Series) -> np.ndarray:
    """A datetime column as datetime64[s] values (NaT kept)."""
    return column.to_numpy(dtype="datetime64[s]")


def history_as_of(*, shipments: pd.DataFrame) -> np.datetime64:
    """The latest moment the history speaks of: outcomes pending after it are unknown."""
    latest = [
        seconds(shipments[c]).max()
        for c in ("allocated_at", "handed_over_at", "delivered_at", "exception_at")
        if c in shipments.columns and shipments[c].notna().any()
    ]
    return max(latest) if latest else NAT


def _as_of(shipments: pd.DataFrame, as_of: np.datetime64 | None) -> np.datetime64:
    return history_as_of(shipments=shipments) if as_of is None else np.datetime64(as_of, "s")


def promised_end(*, shipments: pd.DataFrame) -> np.ndarray:
    """Midnight after the promised delivery day."""
    return (seconds(shipments["promised_delivery"]).astype("datetime64[D]") + ONE_DAY).astype("datetime64[s]")


def carrier_delay_outcome(
    *, shipments: pd.DataFrame, as_of: np.datetime64 | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per shipment: carrier-delay label (1 late, 0 on time, NaN unknown) and when it became known."""
    as_of = _as_of(shipments, as_of)
    handed = seconds(shipments["handed_over_at"])
    delivered = seconds(shipments["delivered_at"])
    deadline = promised_end(shipments=shipments)
    late_known = np.maximum(handed, deadline)
    was_handed = ~np.isnat(handed)
    is_delivered = ~np.isnat(delivered)
    on_time = is_delivered & (delivered < deadline)
    late = was_handed & ~on_time & (is_delivered | (late_known <= as_of))
    label = np.where(on_time & was_handed, 0.0, np.where(late, 1.0, np.nan))
    known = np.where(label == 0.0, delivered, np.where(label == 1.0, late_known, NAT))
    return label, known


def late_handover_outcome(
    *, shipments: pd.DataFrame, as_of: np.datetime64 | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per shipment: late-handover label (1 late, 0 on time, NaN unknown) and when it became known."""
    n = len(shipments)
    if "ship_by" not in shipments.columns:
        return np.full(n, np.nan), np.full(n, NAT)
    as_of = _as_of(shipments, as_of)
    handed = seconds(shipments["handed_over_at"])
    ship_by = seconds(shipments["ship_by"])
    deadline = ship_by + ONE_SECOND
    exception_at = seconds(shipments["exception_at"]) if "exception_at" in shipments.columns else np.full(n, NAT)
    cancelled_at = np.where(pick_failed(shipments=shipments), exception_at, NAT)
    was_handed = ~np.isnat(handed)
    has_ship_by = ~np.isnat(ship_by)
    on_time = has_ship_by & was_handed & (handed <= ship_by)
    late_handed = has_ship_by & was_handed & (handed > ship_by)
    # Not handed over: late once the deadline passes, unless cancelled at or before it.
    cancelled_first = ~np.isnat(cancelled_at) & (cancelled_at <= deadline)
    late_pending = has_ship_by & ~was_handed & ~cancelled_first & (deadline <= as_of)
    late = late_handed | late_pending
    label = np.where(on_time, 0.0, np.where(late, 1.0, np.nan))
    known = np.where(on_time, handed, np.where(late, deadline, NAT))
    return label, known


def carrier_delay(*, shipments: pd.DataFrame, as_of: np.datetime64 | None = None) -> np.ndarray:
    """The carrier-delay label (1 late, 0 on time, NaN unknown)."""
    return carrier_delay_outcome(shipments=shipments, as_of=as_of)[0]


def late_handover(*, shipments: pd.DataFrame, as_of: np.datetime64 | None = None) -> np.ndarray:
    """The late-handover label (1 late, 0 on time, NaN unknown)."""
    return late_handover_outcome(shipments=shipments, as_of=as_of)[0]


def pick_failed(*, shipments: pd.DataFrame) -> np.ndarray:
    """Whether the node failed the shipment at pick (it was re-routed, never handed over)."""
    flags = np.zeros(len(shipments), dtype=bool)
    for code in PICK_FAILURE_CODES:
        flags |= has_code(shipments=shipments, code=code)
    return flags


def carrier_exception(*, shipments: pd.DataFrame) -> np.ndarray:
    """Whether the carrier raised an exception (lost, damaged, address problem)."""
    flags = np.zeros(len(shipments), dtype=bool)
    for code in CARRIER_EXCEPTION_CODES:
        flags |= has_code(shipments=shipments, code=code)
    return flags


def has_code(*, shipments: pd.DataFrame, code: str) -> np.ndarray:
    """Whether each shipment's exception codes include the code."""
    if "exception_codes" not in shipments.columns:
        return np.zeros(len(shipments), dtype=bool)
    codes = shipments["exception_codes"].fillna("").astype("str")
    return ("|" + codes + "|").str.contains(f"|{code}|", regex=False).to_numpy(dtype=bool)
