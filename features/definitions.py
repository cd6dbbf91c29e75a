"""Point-in-time feature definitions, shared by the offline builder and the online state.

A feature at decision time t may use only facts known strictly before t. The definitions here are
data (which stream, which key, which window) plus two pure functions (`static_features`,
`derive_features`); the offline builder and the online state only differ in how they count
stream entries, so the same t gives the same features by construction, and a test checks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from features.calendar import is_peak
from features.schema import PLAN_COLUMNS

DAY = 86_400
KEY_SHIFT = np.int64(1) << np.int64(34)  # composite key*2^34 + epoch seconds (good until the year 2514)
PRIOR_STRENGTH = 20.0

Stream = Literal["delivery", "handover", "allocation", "handed", "carrier_exception", "transit"]
# The attributes each stream entry carries (the keys an aggregate may group by).
STREAM_KEYS: dict[str, tuple[str, ...]] = {
    "delivery": ("carrier", "origin_region", "dest_region"),
    "handover": ("node_id", "node_type"),
    "allocation": ("node_id", "carrier"),
    "handed": ("carrier",),
    "carrier_exception": ("carrier",),
    # Calendar days from handover to an on-time delivery: how long the lane takes when it works.
    "transit": ("carrier", "service", "origin_region", "dest_region"),
}


@dataclass(frozen=True)
class Rolling:
    """The last `seconds` before t."""

    seconds: int


@dataclass(frozen=True)
class Today:
    """From midnight (UTC) of t's day up to t."""


@dataclass(frozen=True)
class Yesterday:
    """The whole calendar day before t's day."""


Window = Rolling | Today | Yesterday
LOOKBACK_SECONDS = 29 * DAY  # the longest any window reaches back


def window_terms(*, window: Window) -> tuple[bool, int, bool, int]:
    """A window as (lo from midnight?, lo offset, hi from midnight?, hi offset): a bound is (t or midnight) + offset."""
    if isinstance(window, Rolling):
        return False, -window.seconds, False, 0
    if isinstance(window, Today):
        return True, 0, False, 0
    return True, -DAY, True, 0


def window_bounds(*, window: Window, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) in epoch seconds for each decision time t."""
    t = np.asarray(t, dtype=np.int64)
    midnight = t - t % DAY
    lo_midnight, lo_offset, hi_midnight, hi_offset = window_terms(window=window)
    return (midnight if lo_midnight else t) + lo_offset, (midnight if hi_midnight else t) + hi_offset


@dataclass(frozen=True)
class Aggregate:
    """Count and sum of a stream's values for the key of the row, over a window before t."""

    name: str
    stream: Stream
    keys: tuple[str, ...]
    window: Window


AGGREGATES: tuple[Aggregate, ...] = (
    # Carrier delay: outcomes of deliveries, by carrier, lane and region.
    Aggregate("delivery_all_28d", "delivery", (), Rolling(28 * DAY)),
    Aggregate("delivery_carrier_28d", "delivery", ("carrier",), Rolling(28 * DAY)),
    Aggregate("delivery_lane_7d", "delivery", ("carrier", "origin_region", "dest_region"), Rolling(7 * DAY)),
    Aggregate("delivery_lane_28d", "delivery", ("carrier", "origin_region", "dest_region"), Rolling(28 * DAY)),
    Aggregate("delivery_region_1d", "delivery", ("carrier", "dest_region"), Rolling(DAY)),
    Aggregate("delivery_region_3d", "delivery", ("carrier", "dest_region"), Rolling(3 * DAY)),
    Aggregate("delivery_dest_2d", "delivery", ("dest_region",), Rolling(2 * DAY)),
    Aggregate("delivery_dest_7d", "delivery", ("dest_region",), Rolling(7 * DAY)),
    Aggregate("delivery_region_7d", "delivery", ("carrier", "dest_region"), Rolling(7 * DAY)),
    Aggregate("delivery_region_28d", "delivery", ("carrier", "dest_region"), Rolling(28 * DAY)),
    Aggregate("transit_lane_28d", "transit", ("carrier", "service", "origin_region", "dest_region"), Rolling(28 * DAY)),
    Aggregate("handed_carrier_7d", "handed", ("carrier",), Rolling(7 * DAY)),
    Aggregate("exception_carrier_7d", "carrier_exception", ("carrier",), Rolling(7 * DAY)),
    Aggregate("allocated_carrier_1d", "allocation", ("carrier",), Rolling(DAY)),
    Aggregate("allocated_carrier_28d", "allocation", ("carrier",), Rolling(28 * DAY)),
    # Node congestion: outcomes of handovers, and the load assigned to the node.
    Aggregate("handover_all_28d", "handover", (), Rolling(28 * DAY)),
    Aggregate("handover_node_1d", "handover", ("node_id",), Rolling(DAY)),
    Aggregate("handover_node_7d", "handover", ("node_id",), Rolling(7 * DAY)),
    Aggregate("handover_node_28d", "handover", ("node_id",), Rolling(28 * DAY)),
    Aggregate("handover_type_7d", "handover", ("node_type",), Rolling(7 * DAY)),
    Aggregate("allocated_node_today", "allocation", ("node_id",), Today()),
    Aggregate("allocated_node_yesterday", "allocation", ("node_id",), Yesterday()),
)

CARRIER_DELAY_CATEGORICAL = ("carrier", "service", "origin_region", "dest_region", "node_type")
CARRIER_DELAY_FEATURES = (
    *CARRIER_DELAY_CATEGORICAL,
    "distance_km",
    "promised_days",
    "carrier_days",
    "lane_transit_days",
    "slack_days",
    "weekday",
    "hour",
    "is_peak",
    "carrier_late_rate_28d",
    "lane_late_rate_7d",
    "lane_late_rate_28d",
    "lane_outcomes_7d",
    "lane_outcomes_28d",
    "region_late_rate_1d",
    "region_late_rate_3d",
    "region_late_rate_7d",
    "dest_late_rate_2d",
    "dest_late_rate_7d",
    "region_late_rate_28d",
    "region_outcomes_7d",
    "carrier_exception_rate_7d",
    "carrier_volume_1d",
    "carrier_volume_ratio",
    "disruptions_known",
    "disruption_severity",
    # A late handover makes a late delivery likelier, so the node's state matters to the carrier model too.
    "hours_to_ship_by",
    "node_late_rate_1d",
    "node_late_rate_7d",
    "capacity_today",
    "backlog_ratio",
    "utilisation_so_far",
    "utilisation_yesterday",
)
NODE_CONGESTION_CATEGORICAL = ("node_id", "node_type")
NODE_CONGESTION_FEATURES = (
    *NODE_CONGESTION_CATEGORICAL,
    "weekday",
    "hour",
    "is_peak",
    "hours_to_ship_by",
    "node_late_rate_1d",
    "node_late_rate_7d",
    "node_late_rate_28d",
    "node_outcomes_7d",
    "node_type_late_rate_7d",
    "capacity_today",
    "backlog_start",
    "backlog_ratio",
    "assigned_today",
    "utilisation_so_far",
    "assigned_yesterday",
    "utilisation_yesterday",
)
MODEL_FEATURES = {"carrier_delay": CARRIER_DELAY_FEATURES, "node_congestion": NODE_CONGESTION_FEATURES}
MODEL_CATEGORICAL = {"carrier_delay": CARRIER_DELAY_CATEGORICAL, "node_congestion": NODE_CONGESTION_CATEGORICAL}
# Columns a decision row must carry (a shipment being routed, or a candidate option).
ROW_COLUMNS = ("allocated_at", *PLAN_COLUMNS)


def epoch_seconds(values: pd.Series | np.ndarray) -> np.ndarray:
    """Datetimes as int64 epoch seconds (NaT becomes the int64 minimum)."""
    return np.asarray(values, dtype="datetime64[s]").astype(np.int64)


def static_features(*, rows: Mapping[str, np.ndarray] | pd.DataFrame) -> dict[str, np.ndarray]:
    """Features of the decision row itself: its plan and calendar, all known at decision time.

    `rows` is a frame or plain column arrays (the live path skips pandas).
    """
    t = np.asarray(rows["allocated_at"], dtype="datetime64[s]")
    n = len(t)
    day = t.astype("datetime64[D]")
    promised = np.asarray(rows["promised_delivery"], dtype="datetime64[s]").astype("datetime64[D]")
    ship_by = (
        np.asarray(rows["ship_by"], dtype="datetime64[s]")
        if "ship_by" in rows
        else np.full(n, np.datetime64("NaT", "s"))
    )
    out: dict[str, np.ndarray] = {}
    for column in ("carrier", "service", "origin_region", "dest_region", "node_type", "node_id"):
        out[column] = np.asarray(rows[column], dtype=object) if column in rows else np.full(n, None)
    distance = rows["distance_km"] if "distance_km" in rows else None
    out["distance_km"] = np.full(n, np.nan) if distance is None else np.asarray(distance, dtype=float)
    out["promised_days"] = (promised - day).astype(np.float64)
    carrier_days = (promised - ship_by.astype("datetime64[D]")).astype("timedelta64[D]").astype(np.float64)
    out["carrier_days"] = np.where(np.isnat(ship_by), np.nan, carrier_days)
    hours = (ship_by - t).astype("timedelta64[s]").astype(np.float64) / 3600.0
    out["hours_to_ship_by"] = np.where(np.isnat(ship_by), np.nan, hours)
    out["weekday"] = ((day.astype(np.int64) + 3) % 7).astype(np.float64)
    out["hour"] = ((t.astype(np.int64) % DAY) / 3600.0).round(3)
    out["is_peak"] = is_peak(days=day).astype(np.float64)
    return out


def smoothed_rates(*, counts: list[np.ndarray], totals: list[np.ndarray], prior: np.ndarray) -> np.ndarray:
    """Late rates (one row per count and total) shrunk toward the network's rate `prior`, so that a lane with
    few outcomes is not noise: (total + strength x prior) / (count + strength), computed in place.

    Where the network has no outcomes yet (prior NaN), neither has the rate.
    """
    rates = np.array(totals, dtype=np.float64)
    rates += PRIOR_STRENGTH * prior
    shrink = np.array(counts, dtype=np.float64)
    shrink += PRIOR_STRENGTH
    rates /= shrink
    return rates


def _ratios(numerators: list[np.ndarray], denominators: list[np.ndarray]) -> np.ndarray:
    """Each numerator / denominator pair as one row, NaN where the denominator is zero or unknown."""
    denominator = np.array(denominators, dtype=np.float64)
    defined = denominator > 0
    ratios = np.array(numerators, dtype=np.float64)
    # One division for every pair, in place, only where defined (a live request pays per array operation).
    np.divide(ratios, denominator, out=ratios, where=defined)
    ratios[~defined] = np.nan
    return ratios


# Late rates shrunk toward the network's rate: feature -> (aggregate, the network-wide aggregate it is shrunk toward).
SMOOTHED_RATES: dict[str, tuple[str, str]] = {
    "carrier_late_rate_28d": ("delivery_carrier_28d", "delivery_all_28d"),
    "lane_late_rate_7d": ("delivery_lane_7d", "delivery_all_28d"),
    "lane_late_rate_28d": ("delivery_lane_28d", "delivery_all_28d"),
    "region_late_rate_1d": ("delivery_region_1d", "delivery_all_28d"),
    "region_late_rate_3d": ("delivery_region_3d", "delivery_all_28d"),
    "dest_late_rate_2d": ("delivery_dest_2d", "delivery_all_28d"),
    "dest_late_rate_7d": ("delivery_dest_7d", "delivery_all_28d"),
    "region_late_rate_7d": ("delivery_region_7d", "delivery_all_28d"),
    "region_late_rate_28d": ("delivery_region_28d", "delivery_all_28d"),
    "node_late_rate_1d": ("handover_node_1d", "handover_all_28d"),
    "node_late_rate_7d": ("handover_node_7d", "handover_all_28d"),
    "node_late_rate_28d": ("handover_node_28d", "handover_all_28d"),
    "node_type_late_rate_7d": ("handover_type_7d", "handover_all_28d"),
}
NETWORK_RATES = ("delivery_all_28d", "handover_all_28d")
# Counts of entries in a window, as features: feature -> aggregate.
WINDOW_COUNTS: dict[str, str] = {
    "lane_outcomes_7d": "delivery_lane_7d",
    "lane_outcomes_28d": "delivery_lane_28d",
    "region_outcomes_7d": "delivery_region_7d",
    "carrier_volume_1d": "allocated_carrier_1d",
    "node_outcomes_7d": "handover_node_7d",
    "assigned_today": "allocated_node_today",
    "assigned_yesterday": "allocated_node_yesterday",
}


def derive_features(
    *,
    static: dict[str, np.ndarray],
    aggregates: dict[str, tuple[np.ndarray, np.ndarray]],
    node_state: dict[str, np.ndarray],
    disruptions: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """All model features from the row's static features, window aggregates and known state."""
    f = dict(static)
    f.update(zip(WINDOW_COUNTS, np.array([aggregates[a][0] for a in WINDOW_COUNTS.values()], dtype=np.float64)))
    capacity = np.asarray(node_state["capacity"], dtype=np.float64)
    backlog = np.asarray(node_state["backlog_start"], dtype=np.float64)
    f["capacity_today"] = capacity
    f["backlog_start"] = backlog
    f["disruptions_known"] = np.asarray(disruptions["count"], dtype=np.float64)
    f["disruption_severity"] = np.asarray(disruptions["severity"], dtype=np.float64)

    # Every ratio in one division: the network's rates first (each shrinks many rates), then the features.
    ratios = {
        **{name: (aggregates[name][1], aggregates[name][0]) for name in NETWORK_RATES},
        "lane_transit_days": (aggregates["transit_lane_28d"][1], aggregates["transit_lane_28d"][0]),
        "carrier_exception_rate_7d": (aggregates["exception_carrier_7d"][0], aggregates["handed_carrier_7d"][0]),
        "carrier_volume_ratio": (f["carrier_volume_1d"] * 28.0, aggregates["allocated_carrier_28d"][0]),
        "backlog_ratio": (backlog, capacity),
        "utilisation_so_far": (f["assigned_today"] + backlog, capacity),
        "utilisation_yesterday": (f["assigned_yesterday"], capacity),
    }
    divided = dict(zip(ratios, _ratios(*zip(*ratios.values()))))
    priors = [divided.pop(name) for name in NETWORK_RATES]
    f.update(divided)
    f["slack_days"] = f["carrier_days"] - f["lane_transit_days"]

    # The rates shrunk toward each network rate, in one stack each.
    for network, prior in zip(NETWORK_RATES, priors):
        shrunk = [name for name, (_, toward) in SMOOTHED_RATES.items() if toward == network]
        counted = [aggregates[SMOOTHED_RATES[name][0]] for name in shrunk]
        smoothed = smoothed_rates(
            counts=[count for count, _ in counted], totals=[total for _, total in counted], prior=prior
        )
        f.update(zip(shrunk, smoothed))
    return f


@dataclass(frozen=True)
class Notices:
    """Announced disruptions as arrays (times in epoch seconds); `carrier` None means every carrier."""

    announced: np.ndarray
    start: np.ndarray
    end: np.ndarray
    region: np.ndarray
    carrier: np.ndarray
    severity: np.ndarray

    @classmethod
    def from_records(cls, records: pd.DataFrame | list[dict] | None) -> Notices | None:
        """Notices from a frame or records with announced_at, start, end, region, carrier, severity."""
        frame = records if isinstance(records, pd.DataFrame) else pd.DataFrame(records or [])
        if frame.empty:
            return None
        carrier = frame["carrier"].to_numpy(dtype=object) if "carrier" in frame else np.full(len(frame), None)
        carrier = np.array([c if isinstance(c, str) and c not in ("", "nan", "None") else None for c in carrier])
        return cls(
            announced=epoch_seconds(frame["announced_at"]),
            start=epoch_seconds(frame["start"]),
            end=epoch_seconds(frame["end"]),
            region=frame["region"].to_numpy(dtype=object),
            carrier=carrier,
            severity=frame["severity"].to_numpy(dtype=np.float64),
        )


def active_disruptions(
    *, notices: Notices | None, t: np.ndarray, carrier: np.ndarray, dest_region: np.ndarray
) -> dict[str, np.ndarray]:
    """Announced disruptions active at t on the row's region (for its carrier, or for all carriers)."""
    count = np.zeros(len(t), dtype=np.float64)
    severity = np.zeros(len(t), dtype=np.float64)
    if notices is None or not len(t):
        return {"count": count, "severity": severity}
    t = np.asarray(t, dtype=np.int64)
    # Only notices that can apply to some row are visited (a live request's rows share one time).
    relevant = np.flatnonzero((notices.announced < t.max()) & (notices.start <= t.max()) & (notices.end > t.min()))
    for i in relevant:
        applies = (t > notices.announced[i]) & (t >= notices.start[i]) & (t < notices.end[i])
        applies &= dest_region == notices.region[i]
        if notices.carrier[i] is not None:
            applies &= carrier == notices.carrier[i]
        count += applies
        severity += np.where(applies, notices.severity[i], 0.0)
    return {"count": count, "severity": severity}
