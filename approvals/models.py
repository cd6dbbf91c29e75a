"""The tables riskroute keeps (SQLAlchemy 2 declarative); migrations in `approvals/migrations` create them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, CheckConstraint, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from approvals.db import Base

# SQLite only auto-numbers an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
Sequence64 = BigInteger().with_variant(Integer, "sqlite")


class EventRecord(Base):
    """One outcome, exception or capacity event as received: kept for the online state and for retraining."""

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(Sequence64, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    event_type: Mapped[str] = mapped_column(String(32))
    event_time: Mapped[datetime] = mapped_column(DateTime, index=True)
    shipment_id: Mapped[str | None] = mapped_column(String(200), index=True)
    payload: Mapped[dict] = mapped_column(JSON)
    payload_hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime)


class RulesetVersion(Base):
    """An immutable, numbered, content-hashed ruleset document."""

    __tablename__ = "ruleset_versions"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(200))
    content: Mapped[dict] = mapped_column(JSON)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    proposal_id: Mapped[int | None] = mapped_column(Integer)  # the applied proposal that made it
    note: Mapped[str] = mapped_column(Text, default="")


class ActiveRuleset(Base):
    """The one pointer to the ruleset version that routes orders (a single row, id 1)."""

    __tablename__ = "active_ruleset"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(ForeignKey("ruleset_versions.number"))
    changed_at: Mapped[datetime] = mapped_column(DateTime)


class Proposal(Base):
    """A proposed change to what routes orders, and where it stands."""

    __tablename__ = "proposals"

    id: Mapped[int] = mapped_column(Sequence64, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(200), index=True)
    diff: Mapped[dict | list] = mapped_column(JSON)
    rationale: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict] = mapped_column(JSON)
    backtest: Mapped[dict | None] = mapped_column(JSON)
    proposer: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64))
    base_version: Mapped[int | None] = mapped_column(ForeignKey("ruleset_versions.number"))
    base_champion: Mapped[str | None] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(16), index=True)
    required_approvals: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime)
    applied_at: Mapped[datetime | None] = mapped_column(DateTime)
    applied_version: Mapped[int | None] = mapped_column(Integer)


class ProposalDecision(Base):
    """One ops lead's approval or rejection, bound to what they saw (content hash and base)."""

    __tablename__ = "proposal_decisions"
    __table_args__ = (UniqueConstraint("proposal_id", "actor", name="uq_proposal_decisions_actor"),)

    id: Mapped[int] = mapped_column(Sequence64, primary_key=True, autoincrement=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("proposals.id"), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    base_version: Mapped[int | None] = mapped_column(Integer)
    base_champion: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class AuditEntry(Base):
    """One link of the append-only, hash-chained audit log."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Sequence64, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict | None] = mapped_column(JSON)
    after: Mapped[dict | None] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """Where the chain ends (a single row): appends lock it, and verification checks the tail against it."""

    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class ApiToken(Base):
    """A bearer token, stored only as its SHA-256."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Sequence64, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
