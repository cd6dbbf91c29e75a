"""Guardrails a rule change must pass before it can even be proposed: protected rules, maximum moves."""

from __future__ import annotations

from approvals.errors import GuardrailViolation
from approvals.policy import Policy
from rules.schema import CapacityRule, Ruleset


def _relative(old: float, new: float) -> float:
    """|new - old| / |old| (infinite when a zero moves)."""
    if old == new:
        return 0.0
    return abs(new - old) / abs(old) if old else float("inf")


def _rules_by_id(ruleset: Ruleset) -> dict[str, object]:
    e = ruleset.eligibility
    rules = {r.id: r for r in (*e.node_types, *e.regions, *e.lanes, *ruleset.scoring.lane_adjustments)}
    rules[e.hazmat.id] = e.hazmat
    rules[e.capacity.id] = e.capacity
    return rules


def _sections(ruleset: Ruleset) -> dict[str, object]:
    """The sections that can be protected as a whole, by their dotted names."""
    return {
        "eligibility.max_risk_by_tier": ruleset.eligibility.max_risk_by_tier,
        "scoring.late_penalty_by_tier": ruleset.scoring.late_penalty_by_tier,
        "scoring.split_penalty": ruleset.scoring.split_penalty,
        "split": ruleset.split,
    }


def check_protected(*, base: Ruleset, proposed: Ruleset) -> None:
    """Protected rules and sections, and the protected list itself, must come through unchanged."""
    if proposed.protected != base.protected:
        raise GuardrailViolation("the list of protected rules cannot be changed by a proposal")
    before, after = {**_rules_by_id(base), **_sections(base)}, {**_rules_by_id(proposed), **_sections(proposed)}
    touched = [name for name in base.protected if before.get(name) != after.get(name)]
    if touched:
        raise GuardrailViolation(f"protected rule(s) {', '.join(touched)} cannot be changed by a proposal")


def _cap_moves(*, base: CapacityRule, proposed: CapacityRule) -> dict[str, tuple[int | None, int | None]]:
    """Explicit caps that differ, keyed `node` or `node/weekday`: (before, after), None where there was none."""
    moves = {}
    for node in set(base.overrides) | set(proposed.overrides):
        moves[node] = (base.overrides.get(node), proposed.overrides.get(node))
    for node in set(base.weekday_overrides) | set(proposed.weekday_overrides):
        old_days, new_days = base.weekday_overrides.get(node, {}), proposed.weekday_overrides.get(node, {})
        for day in set(old_days) | set(new_days):
            moves[f"{node}/{day}"] = (old_days.get(day), new_days.get(day))
    return {key: move for key, move in sorted(moves.items()) if move[0] != move[1]}


def check_moves(*, base: Ruleset, proposed: Ruleset, policy: Policy, evidence: dict) -> bool:
    """Every number moves within its limit; returns whether any capacity cap goes down (a capacity cut)."""
    problems: list[str] = []
    cut = False

    def limit(name: str, old: float, new: float, largest: float) -> None:
        moved = _relative(old, new)
        if moved > largest + 1e-12:
            problems.append(f"{name} moves {old:g} -> {new:g} ({moved:.0%}); the most allowed is {largest:.0%}")

    b_cap, p_cap = base.eligibility.capacity, proposed.eligibility.capacity
    limit("capacity.default_share", b_cap.default_share, p_cap.default_share, policy.max_capacity_change)
    cut |= p_cap.default_share < b_cap.default_share
    current_caps = evidence.get("current_caps", {}) if isinstance(evidence, dict) else {}
    for key, (old, new) in _cap_moves(base=b_cap, proposed=p_cap).items():
        old, new = current_caps.get(key) if old is None else old, current_caps.get(key) if new is None else new
        if old is None or new is None:
            problems.append(
                f"capacity cap of {key}: give evidence.current_caps[{key!r}] (its cap today) to check the move"
            )
            continue
        limit(f"capacity cap of {key}", float(old), float(new), policy.max_capacity_change)
        cut |= float(new) < float(old)
    for tier, old in base.scoring.late_penalty_by_tier.items():
        limit(
            f"late penalty ({tier})",
            old,
            proposed.scoring.late_penalty_by_tier.get(tier, 0.0),
            policy.max_weight_change,
        )
    limit("split penalty", base.scoring.split_penalty, proposed.scoring.split_penalty, policy.max_weight_change)
    limit(
        "handling per extra unit",
        base.scoring.handling_per_extra_unit,
        proposed.scoring.handling_per_extra_unit,
        policy.max_weight_change,
    )
    old_lanes = {a.id: a.amount for a in base.scoring.lane_adjustments}
    for adjustment in proposed.scoring.lane_adjustments:
        if adjustment.id in old_lanes:
            limit(
                f"lane adjustment {adjustment.id}",
                old_lanes[adjustment.id],
                adjustment.amount,
                policy.max_weight_change,
            )
        elif abs(adjustment.amount) > policy.max_new_lane_adjustment:
            problems.append(
                f"new lane adjustment {adjustment.id} of {adjustment.amount:g} exceeds the largest allowed "
                f"({policy.max_new_lane_adjustment:g})"
            )
    for tier, old in base.eligibility.max_risk_by_tier.items():
        new = proposed.eligibility.max_risk_by_tier.get(tier, 1.0)
        limit(f"max risk ({tier})", old, new, policy.max_risk_limit_change)
    if problems:
        raise GuardrailViolation("; ".join(problems))
    return cut
