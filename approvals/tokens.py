"""API tokens and roles: bearer tokens stored only as SHA-256 hashes, each bound to one role."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from approvals import audit
from approvals.errors import Conflict, InvalidRequest, NotFound
from approvals.models import ApiToken

ROLES = ("router", "ops_lead", "data_scientist", "admin")
PREFIX = "rr_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and role."""

    name: str
    role: str


def digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def create(*, session: Session, name: str, role: str, created_by: str) -> str:
    """A new token for `role`; the token itself is returned once and never stored."""
    if role not in ROLES:
        raise InvalidRequest(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not name.strip():
        raise InvalidRequest("name: a token needs a name")
    if session.execute(select(ApiToken.id).where(ApiToken.name == name)).first() is not None:
        raise Conflict(f"a token named {name!r} already exists (revoked tokens keep their names)")
    token = PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(name=name, role=role, token_hash=digest(token), created_at=audit.now(), created_by=created_by)
    session.add(record)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a token named {name!r} already exists") from None
    audit.append(
        session=session,
        actor=created_by,
        action="token.created",
        object_type="token",
        object_id=name,
        after={"name": name, "role": role},
    )
    return token


def revoke(*, session: Session, name: str, actor: str, reason: str) -> None:
    """Revoke a token by name (it stops working at once, and in every worker within the auth cache's life)."""
    record = session.execute(select(ApiToken).where(ApiToken.name == name).with_for_update()).scalar_one_or_none()
    if record is None:
        raise NotFound(f"no token named {name!r}")
    if record.revoked_at is not None:
        raise Conflict(f"token {name!r} was already revoked at {record.revoked_at}")
    record.revoked_at = audit.now()
    audit.append(
        session=session,
        actor=actor,
        action="token.revoked",
        object_type="token",
        object_id=name,
        before={"role": record.role, "revoked": False},
        after={"role": record.role, "revoked": True},
        reason=reason,
    )


def authenticate(*, session: Session, token: str) -> Principal | None:
    """The principal a live token stands for, or None."""
    record = session.execute(
        select(ApiToken).where(ApiToken.token_hash == digest(token), ApiToken.revoked_at.is_(None))
    ).scalar_one_or_none()
    return Principal(name=record.name, role=record.role) if record is not None else None


def listing(*, session: Session) -> list[ApiToken]:
    """Every token (hashes are never shown)."""
    return list(session.execute(select(ApiToken).order_by(ApiToken.id)).scalars())
