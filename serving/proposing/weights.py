"""Late-penalty proposals: the penalties per tier that minimise cost + valued lateness on a backtest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from approvals.policy import Policy
from rules.backtest import Replay, Risk, replay_ruleset
from rules.schema import Ruleset
from serving.proposing.filing import Change


@dataclass(frozen=True)
class PenaltyPoint:
    """One setting of the late penalties, replayed: cost and valued lateness per order, in total and per tier."""

    penalties: dict[str, float]
    cost_per_order: float
    lateness_per_order: float
    expected_on_time: float
    by_tier: dict[str, float]

    @property
    def total(self) -> float:
        """Cost plus valued lateness, per routed order."""
        return self.cost_per_order + self.lateness_per_order


@dataclass(frozen=True)
class PenaltyTuning:
    """The late penalties that minimise cost + lateness on a backtest, against today's, with the sweep behind them."""

    base: PenaltyPoint
    best: PenaltyPoint
    values: dict[str, float]
    sweep: list[dict]
    orders: int

    @property
    def gain(self) -> float:
        """Relative fall of cost + lateness per order from today's penalties to the tuned ones."""
        return 1 - self.best.total / self.base.total if self.base.total else 0.0

    def tier_gains(self) -> dict[str, float]:
        """Relative fall of cost + lateness per order of each tier whose penalty moves."""
        moved = [t for t in self.base.penalties if self.best.penalties[t] != self.base.penalties[t]]
        return {
            t: 1 - self.best.by_tier[t] / self.base.by_tier[t]
            for t in moved
            if self.base.by_tier.get(t) and t in self.best.by_tier
        }


def _penalty_point(*, replay: Replay, ruleset: Ruleset, risk: Risk, values: dict[str, float]) -> PenaltyPoint:
    """Replay under `ruleset`: cost per order, and lateness as `values[tier]` x P(the order arrives late)."""
    outcome = replay_ruleset(replay=replay, ruleset=ruleset, risk=risk)
    s, b = outcome.shipments, replay.batch
    # The customer waits for the whole order: it is late if any of its shipments is.
    on_time = np.ones(b.n_orders)
    np.multiply.at(on_time, s["order"].to_numpy(), 1.0 - s["p_late"].to_numpy())
    cost = np.bincount(s["order"].to_numpy(), weights=s["cost"].to_numpy(), minlength=b.n_orders)
    routed = np.isfinite(outcome.decisions.chosen_total)
    tier = pd.Series(b.order_tier[routed])
    lateness = (1.0 - on_time[routed]) * tier.map(values).fillna(0.0).to_numpy()
    per_tier = pd.Series(cost[routed] + lateness).groupby(tier.to_numpy()).mean()
    return PenaltyPoint(
        penalties=dict(ruleset.scoring.late_penalty_by_tier),
        cost_per_order=outcome.cost_per_order,
        lateness_per_order=float(lateness.mean()) if len(lateness) else 0.0,
        expected_on_time=outcome.expected_on_time,
        by_tier={str(k): float(v) for k, v in per_tier.items()},
    )


def _with_penalties(*, ruleset: Ruleset, penalties: dict[str, float]) -> Ruleset:
    """The ruleset with other late penalties (everything else as it was)."""
    document = ruleset.model_dump(mode="json")
    document["scoring"]["late_penalty_by_tier"] = penalties
    return Ruleset.model_validate(document)


def tune_late_penalty(
    *,
    replay: Replay,
    ruleset: Ruleset,
    risk: Risk,
    max_change: float = 0.5,
    steps: int = 4,
    values: dict[str, float] | None = None,
) -> PenaltyTuning | None:
    """The late penalty per tier that minimises cost + valued lateness on the replay (None if they are protected).

    Lateness is valued at `values[tier]` per late order (an order is late if any shipment is): by
    default today's penalties, so the question is whether deciding with other penalties buys
    on-time orders cheaper than they are worth, once splits and binding caps are counted.
    Penalties are scaled together over `2 * steps + 1` points within `max_change` of today's; each
    tier's best scale is read off its own orders' totals (a tier's penalty moves mostly its own
    orders), and the combination is replayed once more, so the figures reported are measured, not
    added up.
    """
    if "scoring.late_penalty_by_tier" in ruleset.protected:
        return None
    today = dict(ruleset.scoring.late_penalty_by_tier)
    values = {**today, **(values or {})}
    span = min(max_change, 0.75)
    scales = [round(1 + span * k / steps, 4) for k in range(-steps, steps + 1)]
    points = {}
    for scale in scales:
        scaled = {tier: round(p * scale, 2) for tier, p in today.items()}
        points[scale] = _penalty_point(
            replay=replay, ruleset=_with_penalties(ruleset=ruleset, penalties=scaled), risk=risk, values=values
        )
    base = points[1.0]
    chosen = {}
    for tier in today:
        totals = {scale: p.by_tier[tier] for scale, p in points.items() if tier in p.by_tier}
        chosen[tier] = min(totals, key=lambda s: (totals[s], abs(s - 1))) if totals else 1.0
    tuned = {tier: round(today[tier] * chosen[tier], 2) for tier in today}
    best = base
    if tuned != today:
        combined = _penalty_point(
            replay=replay, ruleset=_with_penalties(ruleset=ruleset, penalties=tuned), risk=risk, values=values
        )
        best = combined if combined.total < base.total else base
    sweep = [
        {
            "scale": scale,
            "cost_per_order": round(p.cost_per_order, 4),
            "lateness_per_order": round(p.lateness_per_order, 4),
            "expected_on_time": round(p.expected_on_time, 5),
            "by_tier": {t: round(v, 4) for t, v in p.by_tier.items()},
        }
        for scale, p in points.items()
    ]
    return PenaltyTuning(base=base, best=best, values=values, sweep=sweep, orders=replay.batch.n_orders)


def weight_changes(
    *,
    replay: Replay,
    risk: Risk,
    policy: Policy,
    window: tuple[str, str],
    values: dict[str, float] | None = None,
    min_gain: float = 0.0025,
) -> Callable[[Ruleset], list[Change]]:
    """A late-penalty change when tuning lowers cost + lateness (valued at `values`) overall, and by `min_gain` or
    more (relative) for the orders of a tier whose penalty moves."""

    def changes(ruleset: Ruleset) -> list[Change]:
        tuning = tune_late_penalty(
            replay=replay, ruleset=ruleset, risk=risk, max_change=policy.max_weight_change, values=values
        )
        if tuning is None or tuning.gain <= 0 or max(tuning.tier_gains().values(), default=0.0) < min_gain:
            return []
        today, tuned = tuning.base.penalties, tuning.best.penalties
        diff = [
            {"op": "replace", "path": f"/scoring/late_penalty_by_tier/{tier}", "value": tuned[tier]}
            for tier in today
            if tuned[tier] != today[tier]
        ]
        moves = ", ".join(f"{tier} {today[tier]:g} -> {tuned[tier]:g}" for tier in today if tuned[tier] != today[tier])
        valued = ", ".join(f"{tier} {value:g}" for tier, value in tuning.values.items())
        stated = tuning.values != today
        valued += " (the cost of lateness stated for this run)" if stated else " (the penalties in force)"
        base, best = tuning.base, tuning.best
        rationale = (
            f"Valuing a late order at {valued}, the "
            f"{tuning.orders:,} most recent orders cost {base.cost_per_order:.2f} per order to ship plus "
            f"{base.lateness_per_order:.2f} in lateness. Deciding them with late penalties {moves} costs "
            f"{best.cost_per_order:.2f} plus {best.lateness_per_order:.2f}: {tuning.gain:.2%} less in total ("
            + ", ".join(f"{gain:.2%} less for {tier} orders" for tier, gain in tuning.tier_gains().items())
            + f"), with expected on-time {base.expected_on_time:.2%} -> {best.expected_on_time:.2%}."
        )
        evidence = {
            "lateness_valued_at": tuning.values,
            "orders": tuning.orders,
            "today": _point_evidence(point=base),
            "tuned": _point_evidence(point=best),
            "cost_plus_lateness_gain": round(tuning.gain, 5),
            "gain_by_tier": {tier: round(gain, 5) for tier, gain in tuning.tier_gains().items()},
            "sweep": tuning.sweep,
            "risk": risk.source,
            "data_window": list(window),
        }
        return [Change("weights:late_penalty", diff, rationale, evidence, f"late penalties {moves}")]

    return changes


def _point_evidence(*, point: PenaltyPoint) -> dict:
    """One penalty setting's figures, rounded for the evidence."""
    return {
        "late_penalty_by_tier": point.penalties,
        "cost_per_order": round(point.cost_per_order, 4),
        "lateness_per_order": round(point.lateness_per_order, 4),
        "cost_plus_lateness": round(point.total, 4),
        "expected_on_time": round(point.expected_on_time, 5),
    }
