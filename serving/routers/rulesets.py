"""Ruleset versions: list, get, the active one, diffs between versions, rollback."""

from __future__ import annotations

from fastapi import APIRouter, Query

from approvals import proposals, rulesets
from serving import schemas
from serving.deps import MAX_ID, IdPath, OpsLeadDep, ReaderDep, RuntimeDep, unit_of_work
from serving.runtime import sync_ruleset

router = APIRouter(prefix="/v1/rulesets", tags=["rulesets"])


def _read(*, version, active: int | None, content: bool) -> schemas.RulesetVersionRead:
    answer = schemas.RulesetVersionRead.model_validate(version)
    answer.active = version.number == active
    answer.content = version.content if content else None
    return answer


@router.get("")
def list_versions(runtime: RuntimeDep, _: ReaderDep) -> list[schemas.RulesetVersionRead]:
    """Every version, newest first."""
    with unit_of_work(runtime) as session:
        active = rulesets.active_number(session=session)
        return [_read(version=v, active=active, content=False) for v in rulesets.listing(session=session)]


@router.get("/active")
def active_version(runtime: RuntimeDep, _: ReaderDep) -> schemas.RulesetVersionRead:
    """The version that routes orders now, with its document."""
    with unit_of_work(runtime) as session:
        version = rulesets.active(session=session)
        return _read(version=version, active=version.number, content=True)


@router.get("/diff")
def diff(
    runtime: RuntimeDep,
    _: ReaderDep,
    from_version: int = Query(alias="from", ge=1, le=MAX_ID),
    to_version: int = Query(alias="to", ge=1, le=MAX_ID),
) -> schemas.RulesetDiffRead:
    """The JSON Patch from one version to another."""
    with unit_of_work(runtime) as session:
        old = rulesets.get(session=session, number=from_version)
        new = rulesets.get(session=session, number=to_version)
        return schemas.RulesetDiffRead(
            from_version=from_version,
            to_version=to_version,
            diff=rulesets.diff(old=rulesets.normalized(version=old), new=rulesets.normalized(version=new)),
        )


@router.get("/{number}")
def get_version(number: IdPath, runtime: RuntimeDep, _: ReaderDep) -> schemas.RulesetVersionRead:
    """One version with its document."""
    with unit_of_work(runtime) as session:
        return _read(
            version=rulesets.get(session=session, number=number),
            active=rulesets.active_number(session=session),
            content=True,
        )


@router.post("/rollback")
def rollback(body: schemas.RollbackCreate, runtime: RuntimeDep, who: OpsLeadDep) -> schemas.ProposalRead:
    """Make an earlier version active at once (recorded, with the reason, as an applied proposal)."""
    with unit_of_work(runtime) as session:
        proposal = proposals.rollback(session=session, to_version=body.to_version, actor=who, reason=body.reason)
        answer = schemas.ProposalRead.model_validate(proposal)
    # This worker follows at once; the others within their polling interval.
    sync_ruleset(runtime=runtime)
    return answer
