"""Promotion proposals: a challenger that beats its champion on the same recent window, with a routing backtest."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from approvals import proposals
from approvals.db import Database, transaction
from approvals.errors import Conflict, InvalidRequest
from approvals.policy import Policy
from features.history import History
from features.offline import Prepared
from rules.backtest import Replay, Risk, compare, replay_ruleset
from rules.schema import Ruleset
from serving.proposing.filing import PROPOSER, backtest_summary


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
    from functools import cache

    from serving.scorer import replay_risk
    from training.tracking import load_registered

    # The champions' side is the same for every promotion: replayed once, and only if one is filed.
    champions_outcome = cache(lambda: replay_ruleset(replay=replay, ruleset=ruleset, risk=risk))

    def run(name: str, version: str) -> dict:
        challenger = load_registered(model_name=name, version=version)
        priced = replay_risk(
            replay=replay, history=history, models=replace(models, **{name: challenger}), prepared=prepared
        )
        old = champions_outcome()
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
