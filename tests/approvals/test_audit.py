"""The audit chain: every tampering is found and named; PostgreSQL refuses edits outright; races keep one chain."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from approvals import audit, proposals, tokens
from approvals.db import transaction
from approvals.errors import ApprovalsError
from approvals.tokens import Principal
from tests.approvals.conftest import SCIENTIST


def _chain(database, n=6) -> None:
    with transaction(sessions=database.sessions) as session:
        for i in range(n):
            audit.append(
                session=session, actor="olu", action="test.step", object_type="thing", object_id=i, after={"i": i}
            )


def _tamper(database, *statements: str) -> None:
    """Edit the table by hand with SQL, as an intruder with database access would (past the trigger)."""
    with database.engine.begin() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        for statement in statements:
            connection.execute(text(statement))
        if postgres:
            connection.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))


def _verify(database) -> audit.Verification:
    with database.sessions() as session:
        return audit.verify(session=session)


def test_an_untouched_chain_verifies(seeded):
    _chain(seeded)
    report = _verify(seeded)
    assert report.ok and report.entries == 7 and report.broken_at is None  # the seeding entry and six steps


@pytest.mark.parametrize(
    ("statements", "broken_at", "words"),
    [
        (["UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 4"], 4, "edited"),
        (["DELETE FROM audit_log WHERE seq = 4"], 4, "missing"),
        (["DELETE FROM audit_log WHERE seq = 7"], 7, "head records"),
        (
            [
                "UPDATE audit_log SET seq = 100 WHERE seq = 4",
                "UPDATE audit_log SET seq = 4 WHERE seq = 5",
                "UPDATE audit_log SET seq = 5 WHERE seq = 100",
            ],
            4,
            "previous-hash link",
        ),
        (
            [
                "INSERT INTO audit_log (seq, at, actor, action, object_type, object_id, prev_hash, hash) "
                "VALUES (8, '2026-11-28 10:00:00', 'mallory', 'test.step', 'thing', 'x', 'f00d', 'beef')"
            ],
            8,
            "previous-hash",
        ),
    ],
    ids=["edited", "deleted", "truncated", "reordered", "inserted"],
)
def test_every_kind_of_tampering_is_named_at_its_first_broken_link(seeded, statements, broken_at, words):
    _chain(seeded)
    _tamper(seeded, *statements)
    report = _verify(seeded)
    assert not report.ok and report.broken_at == broken_at and words in report.problem


def test_postgresql_refuses_update_and_delete_of_the_audit_log(postgres_seeded):
    seeded = postgres_seeded
    _chain(seeded, n=2)
    for statement in ("UPDATE audit_log SET reason = 'x' WHERE seq = 1", "DELETE FROM audit_log WHERE seq = 1"):
        with pytest.raises(DBAPIError, match="append-only"):
            with seeded.engine.begin() as connection:
                connection.execute(text(statement))
    assert _verify(seeded).ok


def test_concurrent_decisions_on_one_proposal_have_exactly_one_winner(seeded, policy):
    with transaction(sessions=seeded.sessions) as session:
        proposal = proposals.create(
            session=session,
            kind="rule_change",
            target="split",
            diff=[{"op": "replace", "path": "/scoring/split_penalty", "value": 5.0}],
            rationale="splits cost more than we price",
            evidence={},
            proposer=SCIENTIST,
            policy=policy,
        )

    def decide(i: int) -> str:
        lead = Principal(name=f"lead-{i}", role="ops_lead")
        try:
            with transaction(sessions=seeded.sessions) as session:
                if i % 2:
                    proposals.reject(session=session, proposal_id=proposal.id, actor=lead, reason="no")
                else:
                    proposals.approve(session=session, proposal_id=proposal.id, actor=lead, reason="yes", policy=policy)
            return "won"
        except ApprovalsError as exc:
            assert exc.status_code == 409, exc
            return "conflict"

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(decide, range(24)))
    assert outcomes.count("won") == 1 and outcomes.count("conflict") == 23
    with seeded.sessions() as session:
        final = proposals.get(session=session, proposal_id=proposal.id)
        assert final.status in ("applied", "rejected")
        assert len(proposals.decisions(session=session, proposal_id=proposal.id)) == 1
        assert audit.verify(session=session).ok


def test_tokens_are_stored_only_as_hashes_and_stop_working_when_revoked(seeded):
    with transaction(sessions=seeded.sessions) as session:
        token = tokens.create(session=session, name="router-1", role="router", created_by="admin")
    with seeded.engine.connect() as connection:
        stored = connection.execute(text("SELECT token_hash FROM api_tokens")).scalar_one()
    assert token.startswith("rr_") and token not in stored and stored == tokens.digest(token)
    with seeded.sessions() as session:
        assert tokens.authenticate(session=session, token=token) == Principal(name="router-1", role="router")
    with transaction(sessions=seeded.sessions) as session:
        tokens.revoke(session=session, name="router-1", actor="admin", reason="rotated")
    with seeded.sessions() as session:
        assert tokens.authenticate(session=session, token=token) is None
        assert audit.verify(session=session).ok
