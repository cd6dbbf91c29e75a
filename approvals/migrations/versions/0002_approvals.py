"""The approval loop: ruleset versions and the active pointer, proposals and decisions, the audit chain, tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# PostgreSQL refuses any UPDATE or DELETE of the audit log, whoever asks.
APPEND_ONLY = (
    """
    CREATE FUNCTION riskroute_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
    END;
    $$
    """,
    """
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION riskroute_audit_append_only()
    """,
)


def upgrade() -> None:
    op.create_table(
        "ruleset_versions",
        sa.Column("number", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("proposal_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("number", name="pk_ruleset_versions"),
    )
    op.create_table(
        "active_ruleset",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_active_ruleset"),
        sa.ForeignKeyConstraint(
            ["version"], ["ruleset_versions.number"], name="fk_active_ruleset_version_ruleset_versions"
        ),
        sa.CheckConstraint("id = 1", name="ck_active_ruleset_single_row"),
    )
    op.create_table(
        "proposals",
        sa.Column("id", ID, nullable=False, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("diff", sa.JSON(), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("backtest", sa.JSON(), nullable=True),
        sa.Column("proposer", sa.String(200), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("base_version", sa.Integer(), nullable=True),
        sa.Column("base_champion", sa.String(50), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("applied_at", sa.DateTime(), nullable=True),
        sa.Column("applied_version", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_proposals"),
        sa.ForeignKeyConstraint(
            ["base_version"], ["ruleset_versions.number"], name="fk_proposals_base_version_ruleset_versions"
        ),
    )
    op.create_index("ix_proposals_target", "proposals", ["target"])
    op.create_index("ix_proposals_status", "proposals", ["status"])
    op.create_table(
        "proposal_decisions",
        sa.Column("id", ID, nullable=False, autoincrement=True),
        sa.Column("proposal_id", ID, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("base_version", sa.Integer(), nullable=True),
        sa.Column("base_champion", sa.String(50), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_proposal_decisions"),
        sa.ForeignKeyConstraint(["proposal_id"], ["proposals.id"], name="fk_proposal_decisions_proposal_id_proposals"),
        sa.UniqueConstraint("proposal_id", "actor", name="uq_proposal_decisions_actor"),
    )
    op.create_index("ix_proposal_decisions_proposal_id", "proposal_decisions", ["proposal_id"])
    op.create_table(
        "audit_log",
        sa.Column("seq", ID, nullable=False, autoincrement=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_type", sa.String(64), nullable=False),
        sa.Column("object_id", sa.String(200), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
        sa.CheckConstraint("id = 1", name="ck_audit_head_single_row"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", ID, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    if op.get_bind().dialect.name == "postgresql":
        for statement in APPEND_ONLY:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS riskroute_audit_append_only()")
    for table in (
        "api_tokens",
        "audit_head",
        "audit_log",
        "proposal_decisions",
        "proposals",
        "active_ruleset",
        "ruleset_versions",
    ):
        op.drop_table(table)
