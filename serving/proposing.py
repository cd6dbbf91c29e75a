"""Proposals from the models: a lane penalty where a carrier's delay risk stays well above its peers,
a capacity cap where a node's congestion risk at its cap stays above the ruleset's target, late
penalties that lower cost + lateness on a backtest, and a challenger's promotion.

It joins what no single package owns: recent history and its point-in-time features (`features`),
the champion delay model (`training`), a backtest of the change (`rules`), and the approval loop
that every proposal must pass (`approvals`). Nothing here changes routing: it only files proposals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from approvals import proposals, rulesets
from approvals.db import Database, transaction
from approvals.errors import Conflict, GuardrailViolation, InvalidRequest
from approvals.policy import Policy
from approvals.tokens import Principal
from features.history import History
from features.labels import carrier_delay
from features.offline import Prepared, features_for_rows, prepare
from features.schema import PLAN_COLUMNS
from rules.backtest import Replay, Risk, compare, replay_ruleset
from rules.batch import caps
from rules.schema import WEEKDAYS, Ruleset
from serving.settings import Proposer
from training.tracking import RegisteredModel

PROPOSER = Principal(name="riskroute-propose", role="data_scientist")


@dataclass(frozen=True)
class LaneFinding:
    """A carrier on a destination region whose predicted delay risk stays above the region's other carriers."""

    carrier: str
    dest_region: str
    shipments: int
    days: int
    risk: float
    risk_low: float
    risk_high: float
    peers_risk: float
    observed_late: float | None

    @property
    def target(self) -> str:
        """The proposal target."""
        return f"lane:{self.carrier}:{self.dest_region}"


def lane_findings(
    *,
    history: History,
    services: pd.DataFrame,
    model: RegisteredModel,
    since: pd.Timestamp,
    min_shipments: int = 200,
    margin: float = 0.02,
    prepared: Prepared | None = None,
) -> list[LaneFinding]:
    """Lanes whose predicted delay risk since `since` exceeds what their own shipments would carry with peer carriers.

    Each of the lane's shipments is priced as it went and again as if each other carrier selling
    the same service on that region had taken it (same node, time, distance and promise), so the
    comparison is like for like. The 95% interval is over daily means of the difference, so a
    one-day burst does not make a finding.
    """
    shipments = history.shipments
    recent = shipments[shipments["allocated_at"] >= since].reset_index(drop=True)
    if recent.empty:
        return []
    columns = ["allocated_at", *PLAN_COLUMNS]
    rows = recent[columns].copy()
    rows["carrier"] = rows["carrier"].astype(str)
    rows["service"] = rows["service"].astype(str)
    rows["dest_region"] = rows["dest_region"].astype(str)
    sold = services[["carrier", "service", "dest_region"]].drop_duplicates()
    peers = rows.reset_index().merge(sold, on=["service", "dest_region"], suffixes=("", "_peer"))
    peers = peers[peers["carrier_peer"] != peers["carrier"]]
    alternatives = peers.drop(columns=["carrier"]).rename(columns={"carrier_peer": "carrier"})
    priced = pd.concat([rows, alternatives[columns]], ignore_index=True)
    prepared = prepared or prepare(history=history)
    features = features_for_rows(
        rows=priced, streams=prepared.streams, node_days=history.node_days, notices=history.notices
    )
    risk = model.model.risk(model.model.encode(features))
    own = pd.Series(risk[: len(rows)])
    peer_mean = pd.Series(risk[len(rows) :]).groupby(alternatives["index"].to_numpy()).mean()
    frame = pd.DataFrame(
        {
            "carrier": rows["carrier"],
            "dest_region": rows["dest_region"],
            "day": rows["allocated_at"].dt.floor("D"),
            "risk": own,
            "peers": peer_mean.reindex(rows.index),
            # Only outcomes known by the end of the history judged.
            "late": carrier_delay(shipments=recent, as_of=np.datetime64(shipments["allocated_at"].max(), "s")),
        }
    ).dropna(subset=["peers"])
    findings = []
    for (carrier, region), lane in frame.groupby(["carrier", "dest_region"]):
        if len(lane) < min_shipments:
            continue
        daily = (lane["risk"] - lane["peers"]).groupby(lane["day"]).mean()
        spread = 1.96 * daily.std(ddof=1) / np.sqrt(len(daily)) if len(daily) > 1 else np.inf
        gap = float((lane["risk"] - lane["peers"]).mean())
        if gap >= margin and gap - spread > 0:
            known = lane["late"].dropna()
            mean = float(lane["risk"].mean())
            findings.append(
                LaneFinding(
                    carrier=carrier,
                    dest_region=region,
                    shipments=len(lane),
                    days=len(daily),
                    risk=mean,
                    risk_low=mean - spread,
                    risk_high=mean + spread,
                    peers_risk=float(lane["peers"].mean()),
                    observed_late=float(known.mean()) if len(known) else None,
                )
            )
    return sorted(findings, key=lambda f: f.peers_risk - f.risk)


def lane_penalty_diff(*, ruleset: Ruleset, finding: LaneFinding, policy: Policy) -> tuple[list[dict], float]:
    """The JSON Patch adding (or moving) the lane's penalty: the expected late cost it adds, within the guardrail."""
    penalty = ruleset.scoring.late_penalty_by_tier.get("standard", 0.0)
    amount = round(min(penalty * (finding.risk - finding.peers_risk), policy.max_new_lane_adjustment), 2)
    rule_id = f"lane-{finding.carrier}-{finding.dest_region}"
    existing = [i for i, a in enumerate(ruleset.scoring.lane_adjustments) if a.id == rule_id]
    if existing:
        old = ruleset.scoring.lane_adjustments[existing[0]].amount
        amount = round(min(amount, old * (1 + policy.max_weight_change)), 2)
        return [{"op": "replace", "path": f"/scoring/lane_adjustments/{existing[0]}/amount", "value": amount}], amount
    adjustment = {"id": rule_id, "carrier": finding.carrier, "dest_regions": [finding.dest_region], "amount": amount}
    return [{"op": "add", "path": "/scoring/lane_adjustments/-", "value": adjustment}], amount


def backtest_summary(*, report: dict, risk: Risk) -> dict:
    """What a proposal carries of its backtest: headline figures, the largest lane moves, changed decisions."""
    kept = ("orders", "window", "old", "new", "changed_share", "sample", "limitations", "truth")
    summary = {k: report.get(k) for k in kept}
    summary["lanes"] = report["lanes"][:10]
    summary["nodes"] = report["nodes"][:10]
    summary["risk"] = risk.source
    return summary


@dataclass(frozen=True)
class Change:
    """One rule change to file: its target, JSON Patch, plain-words rationale and evidence."""

    target: str
    diff: list[dict]
    rationale: str
    evidence: dict
    summary: str


def file_changes(
    *,
    database: Database,
    changes: list[Callable[[Ruleset], list[Change]]],
    replay: Replay,
    risk: Risk,
    policy: Policy,
    truth: pd.DataFrame | None = None,
) -> list[dict]:
    """File each change against the active ruleset with a backtest of exactly that change; what was filed or not.

    With the twin's `truth` (`rules.backtest.recorded_truth`), each backtest also says how far its
    expected on-time rate is from the true one where history made the same plans.
    """
    with database.sessions() as session:
        base = rulesets.active(session=session)
        ruleset = rulesets.to_ruleset(version=base)
    old = replay_ruleset(replay=replay, ruleset=ruleset, risk=risk)
    filed = []
    for change in (change for build in changes for change in build(ruleset)):
        candidate = rulesets.patched(base=base, patch=change.diff)
        new = replay_ruleset(replay=replay, ruleset=candidate, risk=risk)
        report = compare(replay=replay, old=old, new=new, sample=3, truth=truth)
        try:
            with transaction(sessions=database.sessions) as session:
                proposal = proposals.create(
                    session=session,
                    kind="rule_change",
                    target=change.target,
                    diff=change.diff,
                    rationale=change.rationale,
                    evidence=change.evidence,
                    backtest=backtest_summary(report=report, risk=risk),
                    proposer=PROPOSER,
                    policy=policy,
                )
            filed.append({"target": change.target, "proposal": proposal.id, "summary": change.summary})
        except (Conflict, GuardrailViolation) as exc:
            filed.append({"target": change.target, "skipped": str(exc)})
    return filed


def lane_changes(
    *, findings: list[LaneFinding], policy: Policy, model: RegisteredModel, window: tuple[str, str]
) -> Callable[[Ruleset], list[Change]]:
    """A lane-penalty change per finding, built against the ruleset it will be filed on."""

    def changes(ruleset: Ruleset) -> list[Change]:
        made = []
        for finding in findings:
            diff, amount = lane_penalty_diff(ruleset=ruleset, finding=finding, policy=policy)
            rationale = (
                f"{finding.carrier} deliveries into {finding.dest_region} carry a predicted delay risk of "
                f"{finding.risk:.1%} (95% interval {finding.risk_low:.1%}-{finding.risk_high:.1%} over "
                f"{finding.days} days, {finding.shipments} shipments); the same shipments with the other carriers "
                f"selling there would carry {finding.peers_risk:.1%}. A lane penalty of {amount:.2f} prices that "
                f"extra lateness into every decision on the lane."
            )
            evidence = {
                "lane": {"carrier": finding.carrier, "dest_region": finding.dest_region},
                "shipments": finding.shipments,
                "days": finding.days,
                "predicted_delay_risk": round(finding.risk, 5),
                "interval_95": [round(finding.risk_low, 5), round(finding.risk_high, 5)],
                "peers_predicted_delay_risk": round(finding.peers_risk, 5),
                "observed_late_rate": None if finding.observed_late is None else round(finding.observed_late, 5),
                "model": {"name": model.name, "version": model.version, "run_id": model.run_id},
                "data_window": list(window),
            }
            made.append(Change(finding.target, diff, rationale, evidence, f"lane penalty {amount:.2f}"))
        return made

    return changes


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


def promotion_finding(*, model_name: str, min_gain: float = 0.005) -> tuple[str, dict] | None:
    """The challenger version and the evidence, when it beats the champion's log loss on the same recent window.

    `min_gain` is relative (0.5 %); calibration must not get worse by more than 0.01 ECE.
    """
    from training.compare import compare
    from training.errors import TrainingError
    from training.tracking import CHALLENGER, alias_version

    try:
        result = compare(model_name=model_name)
    except TrainingError:
        return None  # no challenger, or nothing comparable: nothing to propose
    champion, challenger = result.contenders[0], result.contenders[1]
    gain = 1 - challenger.scores["logloss"] / champion.scores["logloss"]
    if gain < min_gain or challenger.scores["ece"] > champion.scores["ece"] + 0.01:
        return None
    evidence = {
        "window_run_id": result.window_run_id,
        "rows": result.rows,
        "champion": {"label": champion.label, "run_id": champion.run_id, **_rounded(champion.scores)},
        "challenger": {"label": challenger.label, "run_id": challenger.run_id, **_rounded(challenger.scores)},
        "historical_rate_baseline": _rounded(result.baseline),
        "log_loss_gain": round(gain, 5),
    }
    return alias_version(model_name=model_name, alias=CHALLENGER), evidence


def promotion_backtest(
    *,
    replay: Replay,
    history: History,
    models,
    risk: Risk,
    ruleset: Ruleset,
    prepared: Prepared | None = None,
    truth: pd.DataFrame | None = None,
) -> Callable[[str, str], dict]:
    """A backtest per promotion: the same orders under the same ruleset, priced by the champions (`risk`) and again
    with the challenger version in place of its champion. Each side's expected figures are its own models' view;
    the twin's `truth` says which is nearer the true on-time rate where history made the same plans."""
    from dataclasses import replace

    from serving.scorer import replay_risk
    from training.tracking import load_registered

    def run(name: str, version: str) -> dict:
        challenger = load_registered(model_name=name, version=version)
        priced = replay_risk(
            replay=replay, history=history, models=replace(models, **{name: challenger}), prepared=prepared
        )
        old = replay_ruleset(replay=replay, ruleset=ruleset, risk=risk)
        new = replay_ruleset(replay=replay, ruleset=ruleset, risk=priced)
        summary = backtest_summary(report=compare(replay=replay, old=old, new=new, sample=3, truth=truth), risk=priced)
        summary["risk"] = f"old: {risk.source}; new: {priced.source}"
        return summary

    return run


def _rounded(scores: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 5) for k, v in scores.items()}


def propose_promotions(
    *,
    database: Database,
    policy: Policy,
    champions,
    model_names: tuple[str, ...],
    backtest: Callable[[str, str], dict] | None = None,
) -> list[dict]:
    """File a model promotion where a challenger beats its champion on the same window; what was filed or skipped.

    `backtest(name, version)`, when given, replays recent orders with the challenger pricing risk in
    place of the champion (see `promotion_backtest`), so the ops lead sees what the promotion would route.
    """
    from training.errors import TrainingError

    filed = []
    for name in model_names:
        found = promotion_finding(model_name=name)
        if found is None:
            continue
        version, evidence = found
        try:
            summary = backtest(name, version) if backtest is not None else None
        except TrainingError as exc:
            filed.append({"target": f"model:{name}", "skipped": f"the challenger could not be backtested: {exc}"})
            continue
        champion, challenger = evidence["champion"], evidence["challenger"]
        rationale = (
            f"{name} {challenger['label']} scores log loss {challenger['logloss']:.4f} against the champion's "
            f"{champion['logloss']:.4f} ({evidence['log_loss_gain']:.1%} better), AUC {challenger['auc']:.4f} vs "
            f"{champion['auc']:.4f}, ECE {challenger['ece']:.4f} vs {champion['ece']:.4f}, on the same "
            f"{evidence['rows']:,} test rows. Promoting it moves @champion; the service follows within a minute."
        )
        try:
            with transaction(sessions=database.sessions) as session:
                proposal = proposals.create(
                    session=session,
                    kind="model_promotion",
                    target=f"model:{name}",
                    diff={"model": name, "version": version},
                    rationale=rationale,
                    evidence=evidence,
                    backtest=summary,
                    proposer=PROPOSER,
                    policy=policy,
                    champions=champions,
                )
            filed.append({"target": f"model:{name}", "proposal": proposal.id, "summary": f"promote v{version}"})
        except (Conflict, InvalidRequest) as exc:
            filed.append({"target": f"model:{name}", "skipped": str(exc)})
    return filed


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


class NoChampion(Exception):
    """Neither model has a champion: there is nothing to propose from."""


@dataclass(frozen=True)
class ProposerRun:
    """What one pass of the proposer found and filed."""

    since: pd.Timestamp
    lanes: int
    nodes: int
    filed: list[dict]


def propose_all(
    *,
    database: Database,
    folder: Path,
    tracking_uri: str | None,
    policy: Policy,
    proposer: Proposer,
    history: History | None = None,
) -> ProposerRun:
    """One pass of the proposer over a twin history: lanes, capacity caps, late penalties and promotions, filed.

    Findings are judged on the last `proposer.days` of history; every change is backtested on the
    newest `proposer.backtest_orders` recorded decisions; late penalties are tuned against
    `proposer.late_cost` (by default the penalties in force). Pending proposals are kept, not repeated.
    """
    from features.history import load_history
    from features.offline import build_features
    from rules.backtest import load_replay, recorded_truth
    from serving.runtime import MODEL_NAMES, MlflowChampions, load_models
    from serving.scorer import replay_risk

    loaded = history if history is not None else load_history(path=folder)[0]
    models, problems = load_models(tracking_uri=tracking_uri)
    if models.carrier_delay is None and models.node_congestion is None:
        raise NoChampion(f"no champion to propose from: {problems}")
    end = loaded.shipments["allocated_at"].max()
    since = end.floor("D") - pd.Timedelta(days=proposer.days)
    window = (str(since), str(end))
    # The streams of the history feed the findings and the backtests' pricing: built once.
    prepared = prepare(history=loaded)
    with database.sessions() as session:
        ruleset = rulesets.to_ruleset(version=rulesets.active(session=session))
    lanes, nodes = [], []
    if models.carrier_delay is not None:
        services = pd.read_parquet(folder / "services.parquet")
        lanes = lane_findings(
            history=loaded, services=services, model=models.carrier_delay, since=since, prepared=prepared
        )
    if models.node_congestion is not None:
        table = build_features(history=loaded, start=since.to_datetime64(), prepared=prepared)["node_congestion"]
        nodes = capacity_findings(
            table=table, model=models.node_congestion, ruleset=ruleset, since=since, max_cut=policy.max_capacity_change
        )
    replay = load_replay(folder=folder, max_orders=proposer.backtest_orders)
    risk = replay_risk(replay=replay, history=loaded, models=models, prepared=prepared)
    truth = recorded_truth(folder=folder)
    filed = propose_promotions(
        database=database,
        policy=policy,
        champions=MlflowChampions(tracking_uri=tracking_uri),
        model_names=MODEL_NAMES,
        backtest=promotion_backtest(
            replay=replay, history=loaded, models=models, risk=risk, ruleset=ruleset, prepared=prepared, truth=truth
        ),
    )
    changes = []
    if lanes:
        changes.append(lane_changes(findings=lanes, policy=policy, model=models.carrier_delay, window=window))
    if nodes:
        changes.append(capacity_changes(findings=nodes, policy=policy, model=models.node_congestion, window=window))
    changes.append(
        weight_changes(replay=replay, risk=risk, policy=policy, window=window, values=dict(proposer.late_cost))
    )
    filed += file_changes(database=database, changes=changes, replay=replay, risk=risk, policy=policy, truth=truth)
    return ProposerRun(since=since, lanes=len(lanes), nodes=len(nodes), filed=filed)
