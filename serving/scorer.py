"""The model-backed risk scorer the engine and the service use: online features in, calibrated risk out.

When a model is missing or the online features are older than the freshness limit, that model's
risk falls back to the historical-rate baseline (the lane's or node's own past rate, from the same
online state) and every affected answer is flagged degraded with the reason: the rules still decide.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from features.online import OnlineFeatureState
from rules.engine import RiskQueries, RiskScores
from training.evaluation import historical_rate
from training.tracking import RegisteredModel

# What a model falls back to when nothing at all is known about a lane or node.
FALLBACK_BASE_RATES = {"carrier_delay": 0.07, "node_congestion": 0.08}


@dataclass
class ModelSet:
    """The models in service (either may be missing)."""

    carrier_delay: RegisteredModel | None = None
    node_congestion: RegisteredModel | None = None

    def versions(self) -> dict[str, str]:
        """Model name -> version in service."""
        return {m.name: m.version for m in (self.carrier_delay, self.node_congestion) if m is not None}


def query_rows(*, queries: RiskQueries) -> pd.DataFrame:
    """Risk queries as the decision rows the feature definitions read."""
    return pd.DataFrame(
        {
            "allocated_at": pd.to_datetime(queries.decided_at).astype("datetime64[s]"),
            "node_id": queries.node_id,
            "node_type": queries.node_type,
            "carrier": queries.carrier,
            "service": queries.service,
            "origin_region": queries.origin_region,
            "dest_region": queries.dest_region,
            "distance_km": pd.array(queries.distance_km, dtype="float64"),
            "ship_by": pd.to_datetime(queries.ship_by).astype("datetime64[s]"),
            "promised_delivery": pd.to_datetime(queries.promised_delivery).astype("datetime64[s]"),
        }
    )


class ModelScorer:
    """Scores candidates with the models in service over the online feature state."""

    def __init__(
        self,
        *,
        models: ModelSet,
        state: OnlineFeatureState,
        freshness_limit: timedelta,
        lock: threading.RLock | None = None,
    ):
        self.models = models
        self.state = state
        self.freshness_limit = freshness_limit
        self.lock = lock or nullcontext()

    def stale_reason(self, *, now: pd.Timestamp) -> str | None:
        """Why the online features cannot be trusted at `now`, if they cannot."""
        last = self.state.last_event_at
        if last is None:
            return "no outcome events received yet"
        age = now - last
        if age > self.freshness_limit:
            return f"features are {age} old (limit {self.freshness_limit})"
        return None

    def features(self, queries: RiskQueries) -> dict[str, np.ndarray]:
        """The online features of each query at its decision time."""
        rows = query_rows(queries=queries)
        with self.lock:
            return self.state.features(rows=rows)

    def score(self, queries: RiskQueries) -> RiskScores:
        """Calibrated risk per query, or the flagged historical-rate baseline where a model cannot serve."""
        return self.score_features(features=self.features(queries), decided_at=queries.decided_at)

    def score_features(self, *, features: dict[str, np.ndarray], decided_at: list) -> RiskScores:
        """Risk from features already looked up (so an explanation can reuse them)."""
        n = len(decided_at)
        stale = self.stale_reason(now=pd.Timestamp(max(decided_at))) if n else None
        notes: list[str] = []
        degraded = np.zeros(n, dtype=bool)
        risks = {}
        for name in ("carrier_delay", "node_congestion"):
            registered: RegisteredModel | None = getattr(self.models, name)
            reason = stale or (None if registered is not None else f"no {name} model is loaded")
            if reason is None:
                model = registered.model
                risks[name] = model.risk(model.encode(features))
                continue
            risks[name] = historical_rate(model_name=name, table=features, base_rate=FALLBACK_BASE_RATES[name])
            degraded[:] = True
            notes.append(f"{name}: historical-rate baseline ({reason})")
        return RiskScores(
            carrier_delay=risks["carrier_delay"],
            node_congestion=risks["node_congestion"],
            degraded=degraded,
            notes=notes,
            model_versions=self.models.versions(),
        )
