"""The model-backed risk scorer the engine and the service use: online features in, calibrated risk out.

When a model is missing or the online features are older than the freshness limit, that model's
risk falls back to the historical-rate baseline (the lane's or node's own past rate, from the same
online state) and every affected answer is flagged degraded with the reason: the rules still decide.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from features.history import History
from features.offline import Prepared, features_for_rows, prepare
from features.online import OnlineFeatureState
from rules.backtest import Replay, Risk
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

    def compiled(self) -> dict[str, bool]:
        """Model name -> whether it scores with its compiled forest yet."""
        return {m.name: m.model.compiled_ is not None for m in (self.carrier_delay, self.node_congestion) if m}


_EPOCH = datetime(1970, 1, 1)
_ONE = {"s": timedelta(seconds=1), "D": timedelta(days=1)}


def _moments(values: list, unit: str) -> np.ndarray:
    """Dates or naive times as datetime64, each distinct value converted once (a request's candidates share most)."""
    step = _ONE[unit]
    converted = {
        value: (value - (_EPOCH if isinstance(value, datetime) else _EPOCH.date())) // step
        for value in dict.fromkeys(values)
    }
    return np.fromiter(map(converted.__getitem__, values), dtype=np.int64, count=len(values)).astype(
        f"datetime64[{unit}]"
    )


def query_rows(*, queries: RiskQueries) -> dict[str, np.ndarray]:
    """Risk queries as the decision-row columns the feature definitions read (plain arrays: no pandas here)."""
    return {
        "allocated_at": _moments(queries.decided_at, "s"),
        "node_id": np.array(queries.node_id, dtype=object),
        "node_type": np.array(queries.node_type, dtype=object),
        "carrier": np.array(queries.carrier, dtype=object),
        "service": np.array(queries.service, dtype=object),
        "origin_region": np.array(queries.origin_region, dtype=object),
        "dest_region": np.array(queries.dest_region, dtype=object),
        "distance_km": np.array([np.nan if d is None else d for d in queries.distance_km], dtype=np.float64),
        "ship_by": _moments(queries.ship_by, "s"),
        "promised_delivery": _moments(queries.promised_delivery, "D").astype("datetime64[s]"),
    }


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

    def feature_age(self, *, now: datetime) -> float | None:
        """Seconds from the newest event applied to `now` (None before the first event)."""
        last = self.state.last_event_seconds
        return None if last is None else float((now - _EPOCH) // _ONE["s"] - last)

    def stale_reason(self, *, now: datetime) -> str | None:
        """Why the online features cannot be trusted at `now`, if they cannot."""
        seconds = self.feature_age(now=now)
        if seconds is None:
            return "no outcome events received yet"
        age = timedelta(seconds=seconds)
        if age > self.freshness_limit:
            return f"features are {age} old (limit {self.freshness_limit})"
        return None

    def lookup(self, queries: RiskQueries) -> tuple[dict[str, np.ndarray], list[tuple[str, ...]]]:
        """The online features of each query at its decision time, and what the state has no history of for it."""
        rows = query_rows(queries=queries)
        with self.lock:
            return self.state.lookup(rows=rows)

    def score(self, queries: RiskQueries) -> RiskScores:
        """Calibrated risk per query, or the flagged historical-rate baseline where a model cannot serve."""
        features, unknown = self.lookup(queries)
        return self.score_features(features=features, decided_at=queries.decided_at, unknown=unknown)

    def score_features(
        self, *, features: dict[str, np.ndarray], decided_at: list, unknown: list[tuple[str, ...]] | None = None
    ) -> RiskScores:
        """Risk from features already looked up (so an explanation can reuse them)."""
        n = len(decided_at)
        stale = self.stale_reason(now=max(decided_at)) if n else None
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
            unknown=unknown,
        )


def replay_risk(*, replay: Replay, history: History, models: ModelSet, prepared: Prepared | None = None) -> Risk:
    """The models' calibrated risk for every option of a backtest replay, priced as of each decision wave's start.

    Pricing at the wave's start (never after the decision) keeps the replay point-in-time correct
    and lets the options a wave shares be priced once; a missing model falls back to its base rate.
    `prepared` reuses streams the caller already built from the same history.
    """
    b = replay.batch
    rows = replay.option_rows()
    order = b.cand_order[b.opt_cand]
    wave_start = pd.Series(replay.decided_at).groupby(replay.order_wave).transform("min").to_numpy()
    rows["allocated_at"] = wave_start[order].astype("datetime64[s]")
    # Options that read the same decision row (same wave, node, lane, distance, promise and ship-by) are priced once.
    key = _dense(replay.order_wave[b.cand_order])
    for column in (
        b.cand_node,
        b.order_dest_region[b.cand_order],
        replay.cand_distance_km,
        b.order_promised_day[b.cand_order],
    ):
        key = _dense(key * (int(key.max(initial=0)) + 1) + _dense(column))
    key = key[b.opt_cand]
    for column in (b.opt_carrier, b.opt_service, b.opt_ship_by_day):
        key = _dense(key * (int(key.max(initial=0)) + 1) + _dense(column))
    _, first, back = np.unique(key, return_index=True, return_inverse=True)
    unique = {name: values[first] for name, values in rows.items()}
    features = features_for_rows(
        rows=unique,
        streams=(prepared or prepare(history=history)).streams,
        node_days=history.node_days,
        notices=history.notices,
    )
    risks = {}
    for name in ("carrier_delay", "node_congestion"):
        registered: RegisteredModel | None = getattr(models, name)
        if registered is None:
            risks[name] = np.full(len(first), FALLBACK_BASE_RATES[name])
        else:
            # A batch this size is worth every core (a model loaded for serving scores on one).
            risks[name] = registered.model.risk(registered.model.encode(features), num_threads=0)
    source = (
        ", ".join(f"{m.name} v{m.version}" for m in (models.carrier_delay, models.node_congestion) if m) or "base rates"
    )
    return Risk(
        carrier_delay=risks["carrier_delay"][back], node_congestion=risks["node_congestion"][back], source=source
    )


def _dense(values: np.ndarray) -> np.ndarray:
    """Values as dense int64 codes 0..k-1."""
    return pd.factorize(values)[0].astype(np.int64)
