"""Proposals: list, get, create, approve, reject, withdraw, rebase (the logic lives in `approvals.proposals`)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from approvals import proposals as service
from serving import schemas
from serving.deps import (
    IdPath,
    OpsLeadDep,
    ProposerDep,
    ReaderDep,
    RuntimeDep,
    WithdrawerDep,
    sweep_proposals,
    unit_of_work,
)
from serving.runtime import sync_ruleset

router = APIRouter(prefix="/v1/proposals", tags=["proposals"])


def _read(*, session, proposal) -> schemas.ProposalRead:
    answer = schemas.ProposalRead.model_validate(proposal)
    answer.decisions = [
        schemas.ProposalDecisionRead.model_validate(d)
        for d in service.decisions(session=session, proposal_id=proposal.id)
    ]
    return answer


@router.get("")
def list_proposals(
    runtime: RuntimeDep,
    _: ReaderDep,
    status: str | None = Query(default=None, max_length=16),
    kind: str | None = Query(default=None, max_length=32),
    target: str | None = Query(default=None, max_length=200),
    limit: int = Query(default=100, ge=1, le=1_000),
) -> list[schemas.ProposalRead]:
    """Proposals, newest first, filtered by status, kind or target."""
    sweep_proposals(runtime)
    with unit_of_work(runtime) as session:
        found = service.listing(session=session, status=status, kind=kind, target=target, limit=limit)
        return [_read(session=session, proposal=p) for p in found]


@router.get("/{proposal_id}")
def get_proposal(proposal_id: IdPath, runtime: RuntimeDep, _: ReaderDep) -> schemas.ProposalRead:
    """One proposal with its decisions."""
    sweep_proposals(runtime)
    with unit_of_work(runtime) as session:
        return _read(session=session, proposal=service.get(session=session, proposal_id=proposal_id))


@router.post("", status_code=201)
def create_proposal(body: schemas.ProposalCreate, runtime: RuntimeDep, who: ProposerDep) -> schemas.ProposalRead:
    """Propose a rule change or a model promotion; guardrails are checked now."""
    champions = runtime.champions if body.kind == "model_promotion" else None
    with unit_of_work(runtime) as session:
        proposal = service.create(
            session=session,
            kind=body.kind,
            target=body.target,
            diff=body.diff,
            rationale=body.rationale,
            evidence=body.evidence,
            backtest=body.backtest,
            proposer=who,
            policy=runtime.settings.approvals,
            champions=champions,
        )
        return _read(session=session, proposal=proposal)


@router.post("/{proposal_id}/approve")
def approve(
    proposal_id: IdPath, body: schemas.DecisionReason, runtime: RuntimeDep, who: OpsLeadDep
) -> schemas.ProposalRead:
    """Approve; with enough approvals the change is applied at once, all or nothing."""
    sweep_proposals(runtime)
    with unit_of_work(runtime) as session:
        proposal = service.approve(
            session=session,
            proposal_id=proposal_id,
            actor=who,
            reason=body.reason,
            policy=runtime.settings.approvals,
            content_hash_seen=body.content_hash,
            champions=runtime.champions,
        )
        answer = _read(session=session, proposal=proposal)
    # This worker decides with an applied ruleset at once; the others within their polling interval.
    sync_ruleset(runtime=runtime)
    return answer


@router.post("/{proposal_id}/reject")
def reject(
    proposal_id: IdPath, body: schemas.DecisionReason, runtime: RuntimeDep, who: OpsLeadDep
) -> schemas.ProposalRead:
    """Reject, with a reason (the target then cools down)."""
    sweep_proposals(runtime)
    with unit_of_work(runtime) as session:
        proposal = service.reject(session=session, proposal_id=proposal_id, actor=who, reason=body.reason)
        return _read(session=session, proposal=proposal)


@router.post("/{proposal_id}/withdraw")
def withdraw(
    proposal_id: IdPath, body: schemas.WithdrawCreate, runtime: RuntimeDep, who: WithdrawerDep
) -> schemas.ProposalRead:
    """The proposer (or an admin) withdraws a pending or stale proposal."""
    with unit_of_work(runtime) as session:
        proposal = service.withdraw(session=session, proposal_id=proposal_id, actor=who, reason=body.reason)
        return _read(session=session, proposal=proposal)


@router.post("/{proposal_id}/rebase")
def rebase(
    proposal_id: IdPath, body: schemas.RebaseCreate, runtime: RuntimeDep, who: ProposerDep
) -> schemas.ProposalRead:
    """Re-anchor a stale proposal on the active version (or current champion); it needs approving again."""
    sweep_proposals(runtime)
    with unit_of_work(runtime) as session:
        proposal = service.rebase(
            session=session,
            proposal_id=proposal_id,
            actor=who,
            policy=runtime.settings.approvals,
            diff=body.diff,
            champions=runtime.champions,
        )
        return _read(session=session, proposal=proposal)
