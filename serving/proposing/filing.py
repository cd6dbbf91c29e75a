"""Filing rule changes: each against the active ruleset, with a backtest of exactly that change, through approvals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from approvals import proposals, rulesets
from approvals.db import Database, transaction
from approvals.errors import Conflict, GuardrailViolation
from approvals.policy import Policy
from approvals.tokens import Principal
from rules.backtest import Replay, Risk, compare, replay_ruleset
from rules.schema import Ruleset

PROPOSER = Principal(name="riskroute-propose", role="data_scientist")


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
