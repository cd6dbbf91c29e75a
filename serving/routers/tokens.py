"""API tokens (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from approvals import tokens
from serving import schemas
from serving.deps import AdminDep, RuntimeDep, unit_of_work

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


@router.get("")
def list_tokens(runtime: RuntimeDep, _: AdminDep) -> list[schemas.TokenRead]:
    """Every token's record (never the token)."""
    with unit_of_work(runtime) as session:
        return [schemas.TokenRead.model_validate(t) for t in tokens.listing(session=session)]


@router.post("", status_code=201)
def create_token(body: schemas.TokenCreate, runtime: RuntimeDep, who: AdminDep) -> schemas.TokenCreated:
    """A new token, shown once in this answer."""
    with unit_of_work(runtime) as session:
        token = tokens.create(session=session, name=body.name, role=body.role, created_by=who.name)
        record = next(t for t in tokens.listing(session=session) if t.name == body.name)
        return schemas.TokenCreated(**schemas.TokenRead.model_validate(record).model_dump(), token=token)


@router.delete("/{name}", status_code=204)
def revoke_token(
    name: str, runtime: RuntimeDep, who: AdminDep, reason: str = Query(min_length=1, max_length=1_000)
) -> Response:
    """Revoke a token by name (every worker stops honouring it within the auth cache's life)."""
    with unit_of_work(runtime) as session:
        tokens.revoke(session=session, name=name, actor=who.name, reason=reason)
    runtime.auth_cache.clear()
    return Response(status_code=204)
