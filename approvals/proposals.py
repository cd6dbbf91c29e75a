"""Proposals and their lifecycle: guardrails at creation, approvals bound to what was seen, atomic apply.

pending -> approved -> applied, or rejected / expired / stale / withdrawn. A rule change is a JSON
Patch against a base ruleset version; a model promotion moves a model's `@champion` to a version;
a rollback points the active ruleset at an earlier version. Every step writes one audit entry in
the same transaction as the change it records. Services never commit: the caller's transaction
(`approvals.db.transaction`) does, so a failure anywhere leaves nothing half done.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from approvals import audit, rulesets
from approvals.errors import Conflict, InvalidRequest, NotAllowed, NotFound
from approvals.guardrails import check_moves, check_protected
from approvals.models import Proposal, ProposalDecision
from approvals.policy import Policy
from approvals.tokens import Principal

KINDS = ("rule_change", "model_promotion", "rollback")
OPEN = ("pending",)
APPROVERS = ("ops_lead",)


class ChampionRegistry(Protocol):
    """Where model champions live (the MLflow registry, in the service)."""

    def champion(self, model_name: str) -> str | None:
        """The version `@champion` points at."""
        ...

    def exists(self, model_name: str, version: str) -> bool:
        """Whether the version is registered."""
        ...

    def promote(self, model_name: str, version: str) -> None:
        """Move `@champion` to the version."""
        ...


def content_hash(*, proposal: Proposal) -> str:
    """SHA-256 over what an approver sees and approves: kind, target, diff, rationale, evidence, backtest, base."""
    canonical = json.dumps(
        {
            "kind": proposal.kind,
            "target": proposal.target,
            "diff": proposal.diff,
            "rationale": proposal.rationale,
            "evidence": proposal.evidence,
            "backtest": proposal.backtest,
            "base_version": proposal.base_version,
            "base_champion": proposal.base_champion,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def summary(*, proposal: Proposal) -> dict:
    """What the audit log records about a proposal's state."""
    return {
        "kind": proposal.kind,
        "target": proposal.target,
        "status": proposal.status,
        "content_hash": proposal.content_hash,
        "base_version": proposal.base_version,
        "base_champion": proposal.base_champion,
    }


def _need(value: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{field}: required, and not blank")
    return value.strip()


def create(
    *,
    session: Session,
    kind: str,
    target: str,
    diff: list | dict,
    rationale: str,
    evidence: dict,
    proposer: Principal,
    policy: Policy,
    backtest: dict | None = None,
    champions: ChampionRegistry | None = None,
) -> Proposal:
    """A new pending proposal, refused if it breaks a guardrail."""
    if kind not in ("rule_change", "model_promotion"):
        raise InvalidRequest(f"kind: {kind!r} is not one of rule_change, model_promotion")
    target, rationale = _need(target, "target"), _need(rationale, "rationale")
    now = audit.now()
    _check_not_duplicate(session=session, target=target)
    _check_cooldown(session=session, target=target, policy=policy, now=now)
    proposal = Proposal(
        kind=kind,
        target=target,
        diff=diff,
        rationale=rationale,
        evidence=evidence or {},
        backtest=backtest,
        proposer=proposer.name,
        status="pending",
        created_at=now,
        expires_at=now + timedelta(hours=policy.expiry_hours),
    )
    if kind == "rule_change":
        base = rulesets.active(session=session)
        proposal.base_version = base.number
        proposal.required_approvals = policy.approvals_for(
            _rule_change_class(base=base, diff=diff, policy=policy, evidence=proposal.evidence)
        )
    else:
        proposal.base_champion = _check_promotion(diff=diff, target=target, champions=champions)
        proposal.required_approvals = policy.approvals_for("model_promotion")
    _record_new(session=session, proposal=proposal, actor=proposer.name, action="proposal.created")
    return proposal


def _record_new(*, session: Session, proposal: Proposal, actor: str, action: str) -> None:
    """Seal a new proposal with its content hash, store it, and write its first audit entry."""
    proposal.content_hash = content_hash(proposal=proposal)
    session.add(proposal)
    session.flush()
    audit.append(
        session=session,
        actor=actor,
        action=action,
        object_type="proposal",
        object_id=proposal.id,
        after=summary(proposal=proposal),
        reason=proposal.rationale,
    )


def _rule_change_class(*, base, diff: list | dict, policy: Policy, evidence: dict) -> str:
    """Check a rule change's guardrails; a change that lowers a capacity cap is a capacity cut."""
    if not isinstance(diff, list) or not diff:
        raise InvalidRequest("diff: a rule change is a non-empty JSON Patch (a list of operations)")
    before = rulesets.to_ruleset(version=base)
    after = rulesets.patched(base=base, patch=diff)
    if after.content_hash() == before.content_hash():
        raise InvalidRequest(f"diff: changes nothing in ruleset version {base.number}")
    check_protected(base=before, proposed=after)
    cut = check_moves(base=before, proposed=after, policy=policy, evidence=evidence)
    return "capacity_cut" if cut else "rule_change"


def _check_promotion(*, diff: list | dict, target: str, champions: ChampionRegistry | None) -> str | None:
    """The champion a promotion is based on; refuses an unknown version or one already champion."""
    if not isinstance(diff, dict) or not {"model", "version"} <= set(diff):
        raise InvalidRequest('diff: a model promotion is {"model": NAME, "version": VERSION}')
    model, version = str(diff["model"]), str(diff["version"])
    if target != f"model:{model}":
        raise InvalidRequest(f"target: a promotion of {model} targets 'model:{model}'")
    if champions is None:
        raise Conflict("model promotions need the model registry, which this caller has not configured")
    if not champions.exists(model, version):
        raise InvalidRequest(f"diff.version: {model} has no registered version {version}")
    current = champions.champion(model)
    if current == version:
        raise InvalidRequest(f"diff.version: version {version} is already {model}'s champion")
    return current


def _check_not_duplicate(*, session: Session, target: str) -> None:
    pending = session.execute(
        select(Proposal.id).where(Proposal.target == target, Proposal.status.in_(OPEN))
    ).scalar_one_or_none()
    if pending is not None:
        raise Conflict(f"proposal {pending} for {target} is already pending; decide or withdraw it first")


def _check_cooldown(*, session: Session, target: str, policy: Policy, now) -> None:
    last = session.execute(
        select(func.max(Proposal.decided_at)).where(Proposal.target == target, Proposal.status == "rejected")
    ).scalar()
    if last is not None and now < last + timedelta(hours=policy.cooldown_hours):
        raise Conflict(
            f"a proposal for {target} was rejected at {last:%Y-%m-%d %H:%M}; "
            f"a new one may come after {last + timedelta(hours=policy.cooldown_hours):%Y-%m-%d %H:%M} (cooldown)"
        )


def get(*, session: Session, proposal_id: int, lock: bool = False) -> Proposal:
    """One proposal (locked for update when it is about to change)."""
    query = select(Proposal).where(Proposal.id == proposal_id)
    proposal = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if proposal is None:
        raise NotFound(f"no proposal {proposal_id}")
    return proposal


def listing(
    *,
    session: Session,
    status: str | None = None,
    kind: str | None = None,
    target: str | None = None,
    limit: int = 100,
) -> list[Proposal]:
    """Proposals, newest first, filtered."""
    query = select(Proposal).order_by(Proposal.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Proposal.status == status)
    if kind is not None:
        query = query.where(Proposal.kind == kind)
    if target is not None:
        query = query.where(Proposal.target == target)
    return list(session.execute(query).scalars())


def decisions(*, session: Session, proposal_id: int) -> list[ProposalDecision]:
    """The approvals and rejections a proposal received."""
    query = select(ProposalDecision).where(ProposalDecision.proposal_id == proposal_id).order_by(ProposalDecision.id)
    return list(session.execute(query).scalars())


def sweep(*, session: Session, champions: ChampionRegistry | None = None) -> int:
    """Mark pending proposals that expired, or whose base moved, as such (with audit entries); returns how many."""
    changed = 0
    for proposal in session.execute(select(Proposal).where(Proposal.status.in_(OPEN)).with_for_update()).scalars():
        changed += _settle(session=session, proposal=proposal, champions=champions) is not None
    return changed


def _settle(*, session: Session, proposal: Proposal, champions: ChampionRegistry | None) -> str | None:
    """Expire or mark stale a pending proposal whose time ran out or whose base moved; returns the new status."""
    now = audit.now()
    status, reason = None, None
    if now >= proposal.expires_at:
        status, reason = "expired", f"expired at {proposal.expires_at:%Y-%m-%d %H:%M} without a decision"
    elif proposal.kind == "rule_change" and proposal.base_version != rulesets.active_number(session=session):
        status = "stale"
        reason = f"its base, ruleset version {proposal.base_version}, is no longer active; rebase it"
    elif proposal.kind == "model_promotion" and champions is not None:
        model = str(proposal.diff["model"])
        if champions.champion(model) != proposal.base_champion:
            status, reason = "stale", f"{model}'s champion moved since it was proposed; rebase it"
    if status is None:
        return None
    before = summary(proposal=proposal)
    proposal.status = status
    audit.append(
        session=session,
        actor="system",
        action=f"proposal.{status}",
        object_type="proposal",
        object_id=proposal.id,
        before=before,
        after=summary(proposal=proposal),
        reason=reason,
    )
    return status


def approve(
    *,
    session: Session,
    proposal_id: int,
    actor: Principal,
    reason: str,
    policy: Policy,
    content_hash_seen: str | None = None,
    champions: ChampionRegistry | None = None,
) -> Proposal:
    """Record an ops lead's approval; with enough approvals the proposal is applied in the same transaction."""
    proposal = _decidable(session=session, proposal_id=proposal_id, actor=actor, reason=reason, champions=champions)
    if content_hash_seen is not None and content_hash_seen != proposal.content_hash:
        raise Conflict(
            f"proposal {proposal.id} changed since you saw it (content hash {proposal.content_hash[:12]}, "
            f"you approved {content_hash_seen[:12]}); review it again"
        )
    _record_decision(session=session, proposal=proposal, actor=actor, decision="approve", reason=reason)
    audit.append(
        session=session,
        actor=actor.name,
        action="proposal.approval_recorded",
        object_type="proposal",
        object_id=proposal.id,
        after={"content_hash": proposal.content_hash, "base_version": proposal.base_version},
        reason=reason.strip(),
    )
    approvals = session.execute(
        select(func.count())
        .select_from(ProposalDecision)
        .where(
            ProposalDecision.proposal_id == proposal.id,
            ProposalDecision.decision == "approve",
            ProposalDecision.content_hash == proposal.content_hash,
        )
    ).scalar_one()
    if approvals >= proposal.required_approvals:
        _transition(session=session, proposal=proposal, status="approved", actor=actor.name, reason=reason)
        _apply(session=session, proposal=proposal, actor=actor.name, champions=champions)
    return proposal


def reject(
    *,
    session: Session,
    proposal_id: int,
    actor: Principal,
    reason: str,
    champions: ChampionRegistry | None = None,
) -> Proposal:
    """An ops lead rejects a pending proposal, with a reason (a cooldown on its target follows)."""
    proposal = _decidable(session=session, proposal_id=proposal_id, actor=actor, reason=reason, champions=champions)
    _record_decision(session=session, proposal=proposal, actor=actor, decision="reject", reason=reason)
    _transition(session=session, proposal=proposal, status="rejected", actor=actor.name, reason=reason)
    return proposal


def _record_decision(*, session: Session, proposal: Proposal, actor: Principal, decision: str, reason: str) -> None:
    """Keep one ops lead's decision, bound to the content hash and base it was made on."""
    session.add(
        ProposalDecision(
            proposal_id=proposal.id,
            actor=actor.name,
            decision=decision,
            reason=reason.strip(),
            content_hash=proposal.content_hash,
            base_version=proposal.base_version,
            base_champion=proposal.base_champion,
            created_at=audit.now(),
        )
    )
    session.flush()


def _decidable(
    *, session: Session, proposal_id: int, actor: Principal, reason: str, champions: ChampionRegistry | None
) -> Proposal:
    """The proposal, locked, if this actor may decide it now."""
    if actor.role not in APPROVERS:
        raise NotAllowed(f"only an ops lead decides proposals; {actor.name} is {actor.role}")
    _need(reason, "reason")
    proposal = get(session=session, proposal_id=proposal_id, lock=True)
    if proposal.proposer == actor.name:
        raise NotAllowed(f"{actor.name} proposed {proposal.id} and cannot decide it")
    if proposal.status == "pending":
        # Expired or stale now: refused below (callers sweep first, in their own transaction, to keep the mark).
        _settle(session=session, proposal=proposal, champions=champions)
    if proposal.status != "pending":
        raise Conflict(f"proposal {proposal.id} is {proposal.status}, not pending: it cannot be decided")
    already = session.execute(
        select(ProposalDecision.decision).where(
            ProposalDecision.proposal_id == proposal.id,
            ProposalDecision.actor == actor.name,
            ProposalDecision.content_hash == proposal.content_hash,
        )
    ).scalar_one_or_none()
    if already is not None:
        raise Conflict(f"{actor.name} already decided proposal {proposal.id} ({already})")
    return proposal


def _transition(*, session: Session, proposal: Proposal, status: str, actor: str, reason: str | None) -> None:
    before = summary(proposal=proposal)
    proposal.status = status
    if status in ("approved", "rejected"):
        proposal.decided_at = audit.now()
    if status == "applied":
        proposal.applied_at = audit.now()
    session.flush()
    audit.append(
        session=session,
        actor=actor,
        action=f"proposal.{status}",
        object_type="proposal",
        object_id=proposal.id,
        before=before,
        after=summary(proposal=proposal),
        reason=reason,
    )


def _apply(*, session: Session, proposal: Proposal, actor: str, champions: ChampionRegistry | None) -> None:
    """Carry out an approved proposal: new version and active pointer, or the alias move; then mark it applied."""
    if proposal.kind == "rule_change":
        base = rulesets.get(session=session, number=proposal.base_version)
        ruleset = rulesets.patched(base=base, patch=proposal.diff)
        version = rulesets.add_version(
            session=session, ruleset=ruleset, actor=actor, proposal_id=proposal.id, note=proposal.rationale
        )
        rulesets.activate(
            session=session, number=version.number, actor=actor, reason=proposal.rationale, proposal_id=proposal.id
        )
        proposal.applied_version = version.number
    elif proposal.kind == "rollback":
        number = int(proposal.diff["to_version"])
        rulesets.activate(
            session=session, number=number, actor=actor, reason=proposal.rationale, proposal_id=proposal.id
        )
        proposal.applied_version = number
    else:
        if champions is None:
            raise Conflict("applying a model promotion needs the model registry")
        model, version = str(proposal.diff["model"]), str(proposal.diff["version"])
        audit.append(
            session=session,
            actor=actor,
            action="model.promoted",
            object_type="model",
            object_id=model,
            before={"champion": proposal.base_champion},
            after={"champion": version},
            reason=proposal.rationale,
        )
        # Last, so that a registry failure rolls the whole transaction back with it.
        champions.promote(model, version)
    _transition(session=session, proposal=proposal, status="applied", actor=actor, reason=None)


def withdraw(*, session: Session, proposal_id: int, actor: Principal, reason: str) -> Proposal:
    """The proposer (or an admin) withdraws a pending or stale proposal."""
    _need(reason, "reason")
    proposal = get(session=session, proposal_id=proposal_id, lock=True)
    if actor.name != proposal.proposer and actor.role != "admin":
        raise NotAllowed(f"only {proposal.proposer} (who proposed it) or an admin can withdraw proposal {proposal.id}")
    if proposal.status not in ("pending", "stale"):
        raise Conflict(f"proposal {proposal.id} is {proposal.status}: only a pending or stale one can be withdrawn")
    _transition(session=session, proposal=proposal, status="withdrawn", actor=actor.name, reason=reason)
    return proposal


def rebase(
    *,
    session: Session,
    proposal_id: int,
    actor: Principal,
    policy: Policy,
    diff: list | dict | None = None,
    champions: ChampionRegistry | None = None,
) -> Proposal:
    """Re-anchor a stale proposal on the current active version (or champion); earlier approvals no longer count."""
    proposal = get(session=session, proposal_id=proposal_id, lock=True)
    if actor.name != proposal.proposer and actor.role not in ("ops_lead", "admin"):
        raise NotAllowed(f"only {proposal.proposer}, an ops lead or an admin can rebase proposal {proposal.id}")
    if proposal.status == "pending":
        _settle(session=session, proposal=proposal, champions=champions)
    if proposal.status != "stale":
        raise Conflict(f"proposal {proposal.id} is {proposal.status}: only a stale proposal is rebased")
    before = summary(proposal=proposal)
    new_diff = diff if diff is not None else proposal.diff
    if proposal.kind == "rule_change":
        base = rulesets.active(session=session)
        proposal.required_approvals = policy.approvals_for(
            _rule_change_class(base=base, diff=new_diff, policy=policy, evidence=proposal.evidence)
        )
        proposal.base_version = base.number
    else:
        proposal.base_champion = _check_promotion(diff=new_diff, target=proposal.target, champions=champions)
    proposal.diff = new_diff
    proposal.status = "pending"
    proposal.expires_at = max(proposal.expires_at, audit.now() + timedelta(hours=policy.expiry_hours))
    proposal.content_hash = content_hash(proposal=proposal)
    session.flush()
    audit.append(
        session=session,
        actor=actor.name,
        action="proposal.rebased",
        object_type="proposal",
        object_id=proposal.id,
        before=before,
        after=summary(proposal=proposal),
    )
    return proposal


def rollback(*, session: Session, to_version: int, actor: Principal, reason: str) -> Proposal:
    """An ops lead points the active ruleset back at an earlier version at once, recorded as an applied proposal."""
    if actor.role not in APPROVERS:
        raise NotAllowed(f"only an ops lead rolls back; {actor.name} is {actor.role}")
    reason = _need(reason, "reason")
    target = rulesets.get(session=session, number=to_version)
    current = rulesets.active_number(session=session)
    if current == target.number:
        raise Conflict(f"ruleset version {to_version} is already active")
    now = audit.now()
    proposal = Proposal(
        kind="rollback",
        target="ruleset",
        diff={"to_version": target.number},
        rationale=reason,
        evidence={"from_version": current},
        backtest=None,
        proposer=actor.name,
        base_version=current,
        status="approved",
        required_approvals=1,
        created_at=now,
        expires_at=now,
        decided_at=now,
    )
    _record_new(session=session, proposal=proposal, actor=actor.name, action="proposal.rollback_approved")
    _apply(session=session, proposal=proposal, actor=actor.name, champions=None)
    return proposal
