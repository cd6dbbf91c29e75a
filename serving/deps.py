"""Dependency aliases the routers share (async: a sync dependency costs a thread hop per request).

Authentication: a bearer token names a principal with one role; every endpoint declares the roles
it admits (401 without a valid token, 403 with the wrong role). A checked token is trusted for
`auth_cache_seconds`, so the hot path does not query the database on every request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from sqlalchemy.orm import Session

from approvals import proposals, tokens
from approvals.db import transaction
from approvals.tokens import Principal
from serving.runtime import NoDatabase, Runtime

TRUSTED = Principal(name="trusted-network", role="router")
MAX_ID = 2**53  # larger numbers are typos (and beyond what every database column holds)
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


async def get_runtime(request: Request) -> Runtime:
    """The loaded runtime of this app."""
    return request.app.state.runtime


async def get_request_id(request: Request) -> str:
    """The id of the request being answered."""
    return request.state.request_id


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
RequestIdDep = Annotated[str, Depends(get_request_id)]


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})


def principal_from(*, runtime: Runtime, authorization: str | None) -> Principal:
    """Who a bearer token belongs to (cached), or a 401."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise _unauthorized("authentication required: send 'Authorization: Bearer <token>'")
    token = authorization[7:].strip()
    key = tokens.digest(token)
    cached = runtime.auth_cache.get(key)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    if runtime.database is None:
        raise NoDatabase("authentication needs the database, and this service runs without one")
    with runtime.database.sessions() as session:
        principal = tokens.authenticate(session=session, token=token)
    if principal is None:
        runtime.auth_cache.pop(key, None)
        raise _unauthorized("the token is not valid (unknown or revoked)")
    runtime.auth_cache[key] = (principal, time.monotonic() + runtime.settings.auth_cache_seconds)
    return principal


@dataclass(frozen=True)
class RoleCheck:
    """A dependency admitting only principals whose role is in `roles` (admin is not implied)."""

    roles: tuple[str, ...]
    open_with_setting: bool = False

    def admit(self, *, runtime: Runtime, authorization: str | None) -> Principal:
        """The principal an Authorization header names, if its role is admitted; a 401 or 403 otherwise."""
        if self.open_with_setting and runtime.settings.open_routing:
            return TRUSTED
        principal = principal_from(runtime=runtime, authorization=authorization)
        if principal.role not in self.roles:
            raise HTTPException(
                status_code=403,
                detail=f"{principal.name} is {principal.role}; this endpoint needs {' or '.join(self.roles)}",
            )
        return principal

    async def __call__(self, request: Request) -> Principal:
        return self.admit(runtime=request.app.state.runtime, authorization=request.headers.get("authorization"))


def roles(*allowed: str, open_with_setting: bool = False) -> RoleCheck:
    """A dependency admitting only principals whose role is in `allowed`."""
    return RoleCheck(roles=allowed, open_with_setting=open_with_setting)


admit_router = roles("router", open_with_setting=True)
RouterDep = Annotated[Principal, Depends(admit_router)]
OpsLeadDep = Annotated[Principal, Depends(roles("ops_lead"))]
ProposerDep = Annotated[Principal, Depends(roles("data_scientist", "ops_lead"))]
ReaderDep = Annotated[Principal, Depends(roles("ops_lead", "data_scientist", "admin"))]
AuditorDep = Annotated[Principal, Depends(roles("ops_lead", "admin"))]
AdminDep = Annotated[Principal, Depends(roles("admin"))]
WithdrawerDep = Annotated[Principal, Depends(roles("data_scientist", "ops_lead", "admin"))]


@contextmanager
def unit_of_work(runtime: Runtime) -> Iterator[Session]:
    """One transaction for one request's business: committed when the block ends, rolled back if it raises."""
    if runtime.database is None:
        raise NoDatabase("this endpoint needs the database, and this service runs without one")
    with transaction(sessions=runtime.database.sessions) as session:
        yield session


def sweep_proposals(runtime: Runtime) -> None:
    """Expire or mark stale what time or a moved base has overtaken, in its own transaction."""
    with unit_of_work(runtime) as session:
        proposals.sweep(session=session)
