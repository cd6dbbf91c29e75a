"""Lane proposals: a penalty where a carrier's predicted delay risk on a region stays well above its peers', and a
block for the tiers whose extra late cost no allowed penalty can price."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from approvals.policy import Policy
from features.history import History
from features.labels import carrier_delay
from features.offline import Prepared, features_for_rows, prepare
from features.schema import PLAN_COLUMNS
from rules.schema import Ruleset
from serving.proposing.filing import Change
from training.tracking import RegisteredModel


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


def lane_changes(
    *, findings: list[LaneFinding], policy: Policy, model: RegisteredModel, window: tuple[str, str]
) -> Callable[[Ruleset], list[Change]]:
    """A lane-penalty change per finding, and a block for the tiers no allowed penalty can price, built against the
    ruleset they will be filed on."""

    def changes(ruleset: Ruleset) -> list[Change]:
        made = []
        for finding in findings:
            evidence = _evidence(finding=finding, model=model, window=window)
            diff, amount = lane_penalty_diff(ruleset=ruleset, finding=finding, policy=policy)
            rationale = (
                f"{finding.carrier} deliveries into {finding.dest_region} carry a predicted delay risk of "
                f"{finding.risk:.1%} (95% interval {finding.risk_low:.1%}-{finding.risk_high:.1%} over "
                f"{finding.days} days, {finding.shipments} shipments); the same shipments with the other carriers "
                f"selling there would carry {finding.peers_risk:.1%}. A lane penalty of {amount:.2f} prices that "
                f"extra lateness into every decision on the lane."
            )
            made.append(Change(finding.target, diff, rationale, evidence, f"lane penalty {amount:.2f}"))
            block = lane_block(ruleset=ruleset, finding=finding, policy=policy, evidence=evidence)
            if block is not None:
                made.append(block)
        return made

    return changes


def _evidence(*, finding: LaneFinding, model: RegisteredModel, window: tuple[str, str]) -> dict:
    """What a lane proposal shows of its finding: the figures, the interval, the model and the window."""
    return {
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


def lane_block(*, ruleset: Ruleset, finding: LaneFinding, policy: Policy, evidence: dict) -> Change | None:
    """A block of the lane for the tiers whose extra late cost, even at the interval's low end, exceeds the largest
    lane penalty a proposal may set (None when no tier's does, or the block already covers them)."""
    gap = finding.risk_low - finding.peers_risk
    penalties = ruleset.scoring.late_penalty_by_tier
    tiers = sorted(t for t, p in penalties.items() if p * gap > policy.max_new_lane_adjustment)
    rule_id = f"block-{finding.carrier}-{finding.dest_region}"
    existing = [i for i, rule in enumerate(ruleset.eligibility.lanes) if rule.id == rule_id]
    if not tiers or (existing and set(ruleset.eligibility.lanes[existing[0]].tiers or ()) >= set(tiers)):
        return None
    if existing:
        diff = [{"op": "replace", "path": f"/eligibility/lanes/{existing[0]}/tiers", "value": tiers}]
    else:
        rule = {"id": rule_id, "carrier": finding.carrier, "dest_regions": [finding.dest_region], "tiers": tiers}
        diff = [{"op": "add", "path": "/eligibility/lanes/-", "value": rule}]
    costs = ", ".join(f"{t} {penalties[t] * gap:.2f}" for t in tiers)
    rationale = (
        f"{finding.carrier} into {finding.dest_region} is late more often than its peers by at least "
        f"{gap:.1%} (the low end of the 95% interval: {finding.risk_low:.1%} against {finding.peers_risk:.1%}). "
        f"For {', '.join(tiers)} orders that is an extra expected late cost per shipment of {costs}, more than the "
        f"largest lane penalty a proposal may set ({policy.max_new_lane_adjustment:g}); blocking the lane for "
        f"them sends those orders to other carriers while other tiers keep it, priced by the lane penalty."
    )
    target = f"lane-block:{finding.carrier}:{finding.dest_region}"
    return Change(target, diff, rationale, evidence, f"block for {', '.join(tiers)}")
