"""Model-priced risk for the network twin run forward: the champions price each decision wave, as in service.

The twin hands over each simulated day's shipments (`observe`), outcomes included with the times
they happen; the streams are rebuilt from the last weeks of them, and each feature window counts
only entries before the wave's time, so a wave is priced on exactly what the run had made known
before it. Today's own shipments reach the streams when the day ends; today's node state —
announced capacity, backlog, load assigned so far — is read from the wave itself. Disruption
notices (the run's scenario announces the same ones whatever the routing) count from the moment
they are announced, as in service. Until the run has a day of history, the base rates price it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.offline import build_streams, features_for_rows
from features.twin.network import REGIONS
from features.twin.policy import SECONDS_PER_DAY, DecisionBatch
from features.twin.scenario import NODE_TYPES, SERVICES
from serving.scorer import FALLBACK_BASE_RATES, ModelSet

LOOKBACK_DAYS = 45  # the longest window (28 days) plus the longest a shipment takes to settle (promise + 8 days lost)


class TwinModelRisk:
    """Prices a twin wave's options with the models on features the run has produced so far."""

    def __init__(self, *, models: ModelSet, notices: pd.DataFrame | None = None) -> None:
        self.models = models
        self.notices = notices
        self.days: list[pd.DataFrame] = []
        self.streams = None
        self.indexes: dict = {}

    def observe(self, shipments: pd.DataFrame) -> None:
        """Take a simulated day's shipments and rebuild the streams (each entry stamped when it becomes known)."""
        if shipments.empty:
            return
        self.days = [*self.days[-(LOOKBACK_DAYS - 1) :], shipments]
        self.streams = build_streams(shipments=pd.concat(self.days, ignore_index=True))
        self.indexes = {}

    def __call__(
        self, batch: DecisionBatch, option_cand: np.ndarray, option_cs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """P(carrier delay) and P(node congestion) per option of the wave."""
        n = len(option_cand)
        if self.streams is None:
            return (
                np.full(n, FALLBACK_BASE_RATES["carrier_delay"]),
                np.full(n, FALLBACK_BASE_RATES["node_congestion"]),
            )
        net = batch.network
        order = batch.cand_order[option_cand]
        node = batch.cand_node[option_cand]
        zone = batch.order_zone[order]
        ship_by_day = batch.ship_by_day(node=node, decision_time=batch.decision_time[order])
        # Priced as of the wave's start: options reading the same decision row are priced once.
        key = np.zeros(n, dtype=np.int64)
        for column in (node, option_cs, zone, ship_by_day, batch.order_promised_day[order]):
            codes = pd.factorize(column)[0].astype(np.int64)
            key = key * (int(codes.max(initial=0)) + 1) + codes
        _, first, back = np.unique(key, return_index=True, return_inverse=True)
        node, cs, zone, order = node[first], option_cs[first], zone[first], order[first]
        start = int(batch.decision_time.min())
        rows = {
            "allocated_at": np.full(len(first), start).astype("datetime64[s]"),
            "node_id": net.node_ids[node].astype(object),
            "node_type": np.array(NODE_TYPES, dtype=object)[net.node_type[node]],
            "carrier": net.carrier_names[net.cs_carrier[cs]].astype(object),
            "service": np.array(SERVICES, dtype=object)[net.cs_service[cs]],
            "origin_region": np.array(REGIONS, dtype=object)[net.node_region[node]],
            "dest_region": np.array(REGIONS, dtype=object)[net.zone_region[zone]],
            "distance_km": net.distance_km[zone, node].astype(np.float64),
            "ship_by": (ship_by_day[first] * SECONDS_PER_DAY + net.node_cutoff_hour[node] * 3600).astype(
                "datetime64[s]"
            ),
            "promised_delivery": (batch.order_promised_day[order] * SECONDS_PER_DAY).astype("datetime64[s]"),
        }
        midnight = (start // SECONDS_PER_DAY) * SECONDS_PER_DAY
        node_days = pd.DataFrame(
            {
                "date": pd.to_datetime(np.full(net.n_nodes, midnight), unit="s"),
                "node_id": net.node_ids.astype(str),
                "capacity": batch.node_capacity.astype(np.float64),
                "backlog_start": batch.node_backlog.astype(np.float64),
            }
        )
        features = features_for_rows(
            rows=rows, streams=self.streams, node_days=node_days, notices=self.notices, indexes=self.indexes
        )
        # Today's allocations are not in the streams until the day ends: the wave knows them exactly.
        assigned = batch.node_assigned[node].astype(np.float64)
        capacity = batch.node_capacity[node].astype(np.float64)
        features["assigned_today"] = assigned
        with np.errstate(divide="ignore", invalid="ignore"):
            features["utilisation_so_far"] = np.where(
                capacity > 0, (assigned + batch.node_backlog[node]) / capacity, np.nan
            )
        risks = []
        for name in ("carrier_delay", "node_congestion"):
            registered = getattr(self.models, name)
            if registered is None:
                risks.append(np.full(len(first), FALLBACK_BASE_RATES[name]))
            else:
                risks.append(registered.model.risk(registered.model.encode(features), num_threads=0))
        return risks[0][back], risks[1][back]
