"""The audit chain: entries and verification."""

from __future__ import annotations

from fastapi import APIRouter, Query

from approvals import audit
from serving import schemas
from serving.deps import MAX_ID, AuditorDep, RuntimeDep, unit_of_work

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("")
def entries(
    runtime: RuntimeDep,
    _: AuditorDep,
    after: int = Query(default=0, ge=0, le=MAX_ID, description="entries after this sequence number"),
    limit: int = Query(default=100, ge=1, le=1_000),
    action: str | None = Query(default=None, max_length=64),
) -> list[schemas.AuditEntryRead]:
    """Entries oldest first, from a sequence number."""
    with unit_of_work(runtime) as session:
        found = audit.entries(session=session, after=after, limit=limit, action=action)
        return [schemas.AuditEntryRead.model_validate(e) for e in found]


@router.get("/verify")
def verify(runtime: RuntimeDep, _: AuditorDep) -> schemas.AuditVerifyRead:
    """Walk the chain; the first broken link, if any."""
    with unit_of_work(runtime) as session:
        report = audit.verify(session=session)
    return schemas.AuditVerifyRead(
        ok=report.ok, entries=report.entries, broken_at=report.broken_at, problem=report.problem
    )
