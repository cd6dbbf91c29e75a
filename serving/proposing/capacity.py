"""Capacity proposals: a (weekday) cap where a node's predicted congestion risk at its cap stays above the target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from approvals.policy import Policy
from rules.batch import caps
from rules.schema import WEEKDAYS, Ruleset
from serving.proposing.filing import Change
from training.tracking import RegisteredModel


@dataclass(frozen=True)
class CapacityFinding:
    """A node (on one weekday, or every day) whose predicted congestion risk at its cap exceeds the ruleset's target."""

    node_id: str
    weekday: str | None
    rows: int
    days: int
    risk: float
    risk_low: float
    risk_high: float
    observed_late: float | None
    current_cap: int
    crossing_load: int | None
    target_risk: float
    peak_load: int

    @property
    def target(self) -> str:
        """The proposal target."""
        return f"capacity:{self.node_id}" + (f":{self.weekday}" if self.weekday else "")

    def proposed_cap(self, *, max_cut: float) -> int:
        """The crossing load, but no lower than one proposal may cut the cap."""
        return max(self.crossing_load or 0, int(np.ceil(self.current_cap * (1 - max_cut))))


def capacity_findings(
    *,
    table: pd.DataFrame,
    model: RegisteredModel,
    ruleset: Ruleset,
    since: pd.Timestamp,
    min_rows: int = 200,
    margin: float = 0.05,
    sample: int = 300,
    max_cut: float = 0.3,
) -> list[CapacityFinding]:
    """Nodes whose congestion risk, loaded to their cap, stays above the ruleset's target.

    For each node and weekday with enough recent decisions, the congestion model prices a sample of
    them again at loads from half the cap up to the cap (everything else as it was): the crossing
    load is the highest load whose risk stays under the target. A finding needs the risk at the cap
    to exceed target + margin, with the 95% interval over daily means above the target, and the cap
    it would propose (no lower than `max_cut` below today's) must bind: below the node's peak daily
    load (the 90th percentile over the days). A node congested below any such cap is congested by
    its backlog, which no cap on new orders relieves. A node found on five weekdays or more is one
    finding for every day.
    """
    target = ruleset.eligibility.capacity.target_risk
    recent = table[table["allocated_at"] >= since]
    if recent.empty:
        return []
    weekday = recent["allocated_at"].dt.day_of_week.to_numpy()
    node_ids = recent["node_id"].astype(str).to_numpy()
    found: dict[str, list[CapacityFinding]] = {}
    for (node, day), rows in recent.groupby([node_ids, weekday]):
        finding = _capacity_finding(
            rows=rows, node=node, weekday=WEEKDAYS[day], model=model, ruleset=ruleset, sample=sample
        )
        if finding is not None and finding.rows >= min_rows and finding.days >= 2:
            binds = finding.proposed_cap(max_cut=max_cut) < finding.peak_load
            if finding.risk >= target + margin and finding.risk_low > target and binds:
                found.setdefault(node, []).append(finding)
    findings = []
    for node, days in found.items():
        if len(days) >= 5:
            rows = recent[node_ids == node]
            whole = _capacity_finding(rows=rows, node=node, weekday=None, model=model, ruleset=ruleset, sample=sample)
            usable = whole is not None and whole.proposed_cap(max_cut=max_cut) < whole.peak_load
            findings.extend([whole] if usable else days)
        else:
            findings.extend(days)
    return sorted(findings, key=lambda f: target - f.risk)


def _capacity_finding(
    *, rows: pd.DataFrame, node: str, weekday: str | None, model: RegisteredModel, ruleset: Ruleset, sample: int
) -> CapacityFinding | None:
    """One node's (and weekday's) congestion risk at its cap, the crossing load, and the evidence behind them."""
    capacity = float(rows["capacity_today"].median())
    day = np.array([WEEKDAYS.index(weekday)]) if weekday else None
    cap = caps(ruleset=ruleset, node=np.array([node], dtype=object), capacity=np.array([capacity]), weekday=day)[0]
    if not np.isfinite(cap) or cap < 1:
        return None
    picked = rows.sample(min(len(rows), sample), random_state=0)
    loads = np.unique(np.round(np.linspace(0.5, 1.0, 11) * cap))
    columns = {name: picked[name].to_numpy() for name in model.model.features_}
    curve = []
    for load in loads:
        columns["assigned_today"] = np.full(len(picked), load)
        backlog, capacity_today = picked["backlog_start"].to_numpy(), picked["capacity_today"].to_numpy()
        columns["utilisation_so_far"] = (load + backlog) / capacity_today
        curve.append(float(model.model.risk(model.model.encode(columns)).mean()))
    as_priced = pd.Series(
        model.model.risk(model.model.encode({n: rows[n].to_numpy() for n in model.model.features_})),
        index=rows.index,
    )
    daily = as_priced.groupby(rows["allocated_at"].dt.floor("D")).mean()
    spread = 1.96 * daily.std(ddof=1) / np.sqrt(len(daily)) if len(daily) > 1 else np.inf
    under = [int(load) for load, risk in zip(loads, curve) if risk < ruleset.eligibility.capacity.target_risk]
    known = rows["label"].dropna() if "label" in rows else pd.Series(dtype=float)
    # A day's load is what was assigned before its last decision, plus that one.
    daily_load = rows["assigned_today"].groupby(rows["allocated_at"].dt.floor("D")).max() + 1
    return CapacityFinding(
        node_id=node,
        weekday=weekday,
        rows=len(rows),
        days=len(daily),
        risk=curve[-1],
        risk_low=curve[-1] - spread,
        risk_high=curve[-1] + spread,
        observed_late=float(known.mean()) if len(known) else None,
        current_cap=int(cap),
        crossing_load=max(under) if under else None,
        target_risk=ruleset.eligibility.capacity.target_risk,
        peak_load=int(np.nanpercentile(daily_load.to_numpy(dtype=np.float64), 90)) if len(daily_load) else 0,
    )


def _pointer(token: str) -> str:
    """A key as one JSON Pointer segment (RFC 6901 escaping)."""
    return token.replace("~", "~0").replace("/", "~1")


def capacity_cap_diff(*, ruleset: Ruleset, finding: CapacityFinding, policy: Policy) -> tuple[list[dict], int]:
    """The JSON Patch setting the node's (weekday) cap: the crossing load, but no further than the guardrail allows."""
    cap = finding.proposed_cap(max_cut=policy.max_capacity_change)
    rule = ruleset.eligibility.capacity
    node = _pointer(finding.node_id)
    if finding.weekday is None:
        op = "replace" if finding.node_id in rule.overrides else "add"
        return [{"op": op, "path": f"/eligibility/capacity/overrides/{node}", "value": cap}], cap
    if finding.node_id not in rule.weekday_overrides:
        path = f"/eligibility/capacity/weekday_overrides/{node}"
        return [{"op": "add", "path": path, "value": {finding.weekday: cap}}], cap
    op = "replace" if finding.weekday in rule.weekday_overrides[finding.node_id] else "add"
    return [{"op": op, "path": f"/eligibility/capacity/weekday_overrides/{node}/{finding.weekday}", "value": cap}], cap


def capacity_changes(
    *, findings: list[CapacityFinding], policy: Policy, model: RegisteredModel, window: tuple[str, str]
) -> Callable[[Ruleset], list[Change]]:
    """A capacity-cap change per finding, built against the ruleset it will be filed on."""

    def changes(ruleset: Ruleset) -> list[Change]:
        made = []
        for finding in findings:
            diff, cap = capacity_cap_diff(ruleset=ruleset, finding=finding, policy=policy)
            when = f"on {finding.weekday.capitalize()}days" if finding.weekday else "every day"
            crossing = (
                f"the risk stays under the target up to about {finding.crossing_load} shipments"
                if finding.crossing_load
                else "the risk stays above the target even at half the cap"
            )
            rationale = (
                f"{finding.node_id} {when}: loaded to its cap of {finding.current_cap} shipments, the congestion "
                f"model puts its late-handover risk at {finding.risk:.1%} (95% interval {finding.risk_low:.1%}-"
                f"{finding.risk_high:.1%} over {finding.days} days, {finding.rows} decisions), above the ruleset's "
                f"target of {finding.target_risk:.0%}; {crossing}. On its busiest days it takes about "
                f"{finding.peak_load} shipments; a cap of {cap} sends the excess elsewhere"
                + (" (the largest cut one proposal may make)." if cap > (finding.crossing_load or 0) else ".")
            )
            key = finding.node_id + (f"/{finding.weekday}" if finding.weekday else "")
            evidence = {
                "node": finding.node_id,
                "weekday": finding.weekday,
                "decisions": finding.rows,
                "days": finding.days,
                "predicted_congestion_risk_at_cap": round(finding.risk, 5),
                "interval_95": [round(finding.risk_low, 5), round(finding.risk_high, 5)],
                "target_risk": finding.target_risk,
                "crossing_load": finding.crossing_load,
                "peak_daily_load": finding.peak_load,
                "observed_late_handover_rate": None
                if finding.observed_late is None
                else round(finding.observed_late, 5),
                "current_caps": {key: finding.current_cap},
                "model": {"name": model.name, "version": model.version, "run_id": model.run_id},
                "data_window": list(window),
            }
            made.append(Change(finding.target, diff, rationale, evidence, f"cap {finding.current_cap} -> {cap}"))
        return made

    return changes
