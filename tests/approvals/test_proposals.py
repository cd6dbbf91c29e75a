"""Proposals as ops leads and data scientists live them: guardrails, approvals bound to content, atomic apply."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from approvals import audit, proposals, rulesets
from approvals.db import transaction
from approvals.errors import Conflict, GuardrailViolation, InvalidRequest, NotAllowed
from approvals.models import AuditEntry, Proposal, RulesetVersion
from rules.errors import RulesetError
from tests.approvals.conftest import LEAD, SCIENTIST, SECOND_LEAD, FakeRegistry

PENALTY_UP = [{"op": "replace", "path": "/scoring/late_penalty_by_tier/plus", "value": 30.0}]


def _propose(database, policy, diff=PENALTY_UP, target="scoring.late_penalty.plus", **extra):
    with transaction(sessions=database.sessions) as session:
        return proposals.create(
            session=session,
            kind=extra.pop("kind", "rule_change"),
            target=target,
            diff=diff,
            rationale="plus orders are late more often than the penalty prices",
            evidence={"window": "2026-10-01/2026-11-01", **extra.pop("evidence", {})},
            proposer=SCIENTIST,
            policy=policy,
            **extra,
        )


def _approve(database, policy, proposal_id, actor=LEAD, **extra):
    with transaction(sessions=database.sessions) as session:
        return proposals.approve(
            session=session, proposal_id=proposal_id, actor=actor, reason="backtest looks right", policy=policy, **extra
        )


def _active(database) -> int:
    with database.sessions() as session:
        return rulesets.active_number(session=session)


def test_an_approved_rule_change_becomes_the_active_version_in_one_step(seeded, policy):
    proposal = _propose(seeded, policy)
    assert proposal.status == "pending" and proposal.base_version == 1 and len(proposal.content_hash) == 64
    applied = _approve(seeded, policy, proposal.id, content_hash_seen=proposal.content_hash)
    assert applied.status == "applied" and applied.applied_version == 2
    assert _active(seeded) == 2
    with seeded.sessions() as session:
        version = rulesets.get(session=session, number=2)
        assert rulesets.to_ruleset(version=version).scoring.late_penalty_by_tier["plus"] == 30.0
        assert version.proposal_id == proposal.id
        actions = [e.action for e in audit.entries(session=session)]
    assert actions[-5:] == [
        "proposal.approval_recorded",
        "proposal.approved",
        "ruleset.version_created",
        "ruleset.activated",
        "proposal.applied",
    ]


@pytest.mark.parametrize(
    ("diff", "message"),
    [
        ([{"op": "replace", "path": "/eligibility/hazmat/forbidden_services", "value": []}], "protected rule"),
        ([{"op": "replace", "path": "/protected", "value": []}], "protected rules cannot"),
        ([{"op": "replace", "path": "/scoring/late_penalty_by_tier/plus", "value": 60.0}], "the most allowed is 50%"),
        ([{"op": "replace", "path": "/eligibility/capacity/default_share", "value": 0.5}], "the most allowed is 30%"),
        ([{"op": "add", "path": "/eligibility/capacity/overrides/DC01", "value": 100}], "current_caps"),
    ],
)
def test_guardrails_refuse_protected_rules_and_large_moves(seeded, policy, diff, message):
    with pytest.raises(GuardrailViolation, match=message):
        _propose(seeded, policy, diff=diff)


def test_a_diff_that_does_not_apply_or_changes_nothing_is_refused(seeded, policy):
    with pytest.raises(RulesetError, match="does not apply"):
        _propose(seeded, policy, diff=[{"op": "replace", "path": "/scoring/nothing_here/x", "value": 1}])
    with pytest.raises(InvalidRequest, match="changes nothing"):
        _propose(seeded, policy, diff=[{"op": "replace", "path": "/scoring/split_penalty", "value": 4.0}])


def test_a_capacity_cut_needs_two_ops_leads(seeded, policy):
    cut = [{"op": "add", "path": "/eligibility/capacity/overrides/DC01", "value": 80}]
    proposal = _propose(seeded, policy, diff=cut, target="capacity:DC01", evidence={"current_caps": {"DC01": 100}})
    assert proposal.required_approvals == 2
    assert _approve(seeded, policy, proposal.id).status == "pending"
    with pytest.raises(Conflict, match="already decided"):
        _approve(seeded, policy, proposal.id)
    assert _approve(seeded, policy, proposal.id, actor=SECOND_LEAD).status == "applied"


def test_no_one_approves_their_own_proposal_and_only_ops_leads_decide(seeded, policy):
    proposal = _propose(seeded, policy)
    with pytest.raises(NotAllowed, match="cannot decide"):
        _approve(seeded, policy, proposal.id, actor=type(LEAD)(name=SCIENTIST.name, role="ops_lead"))
    with pytest.raises(NotAllowed, match="only an ops lead"):
        _approve(seeded, policy, proposal.id, actor=SCIENTIST)


def test_an_approval_is_bound_to_the_content_seen(seeded, policy):
    proposal = _propose(seeded, policy)
    with pytest.raises(Conflict, match="changed since you saw it"):
        _approve(seeded, policy, proposal.id, content_hash_seen="0" * 64)


def test_one_pending_proposal_per_target_and_a_cooldown_after_a_rejection(seeded, policy):
    first = _propose(seeded, policy)
    with pytest.raises(Conflict, match="already pending"):
        _propose(seeded, policy)
    with transaction(sessions=seeded.sessions) as session:
        proposals.reject(session=session, proposal_id=first.id, actor=LEAD, reason="not with peak coming")
    with pytest.raises(Conflict, match="cooldown"):
        _propose(seeded, policy)


def test_a_proposal_whose_base_moved_is_stale_until_rebased(seeded, policy):
    older = _propose(seeded, policy)
    split = _propose(
        seeded, policy, diff=[{"op": "replace", "path": "/scoring/split_penalty", "value": 5.0}], target="split"
    )
    _approve(seeded, policy, split.id)
    with pytest.raises(Conflict, match="stale"):
        _approve(seeded, policy, older.id)
    with transaction(sessions=seeded.sessions) as session:
        assert proposals.sweep(session=session) == 1
        assert proposals.get(session=session, proposal_id=older.id).status == "stale"
    with transaction(sessions=seeded.sessions) as session:
        rebased = proposals.rebase(session=session, proposal_id=older.id, actor=SCIENTIST, policy=policy)
        assert rebased.status == "pending" and rebased.base_version == 2 and rebased.content_hash != older.content_hash
    assert _approve(seeded, policy, older.id).applied_version == 3


def test_an_expired_proposal_cannot_be_approved(seeded, policy):
    proposal = _propose(seeded, policy)
    with transaction(sessions=seeded.sessions) as session:
        session.get(Proposal, proposal.id).expires_at = audit.now() - timedelta(seconds=1)
    with pytest.raises(Conflict, match="expired"):
        _approve(seeded, policy, proposal.id)


def test_a_crash_during_apply_leaves_nothing_half_applied(seeded, policy, monkeypatch):
    proposal = _propose(seeded, policy)
    with seeded.sessions() as session:
        entries_before = session.scalar(select(func.count()).select_from(AuditEntry))

    def crash(**_):
        raise RuntimeError("power cut between the new version and the pointer")

    monkeypatch.setattr(rulesets, "activate", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        _approve(seeded, policy, proposal.id)
    with seeded.sessions() as session:
        assert session.scalar(select(func.count()).select_from(RulesetVersion)) == 1
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == entries_before
        assert proposals.get(session=session, proposal_id=proposal.id).status == "pending"
        assert audit.verify(session=session).ok
    assert _active(seeded) == 1


def test_a_model_promotion_moves_the_champion_and_a_registry_failure_undoes_it(seeded, policy):
    registry = FakeRegistry()
    diff = {"model": "carrier_delay", "version": "2"}
    proposal = _propose(
        seeded, policy, diff=diff, target="model:carrier_delay", kind="model_promotion", champions=registry
    )
    assert proposal.base_champion == "1"
    registry.fail = True
    with pytest.raises(RuntimeError, match="unreachable"):
        _approve(seeded, policy, proposal.id, champions=registry)
    with seeded.sessions() as session:
        assert proposals.get(session=session, proposal_id=proposal.id).status == "pending"
    registry.fail = False
    assert _approve(seeded, policy, proposal.id, champions=registry).status == "applied"
    assert registry.champions["carrier_delay"] == "2"


def test_an_ops_lead_rolls_back_at_once_and_it_is_recorded_as_an_applied_proposal(seeded, policy):
    _approve(seeded, policy, _propose(seeded, policy).id)
    assert _active(seeded) == 2
    with pytest.raises(NotAllowed):
        with transaction(sessions=seeded.sessions) as session:
            proposals.rollback(session=session, to_version=1, actor=SCIENTIST, reason="x")
    with transaction(sessions=seeded.sessions) as session:
        rollback = proposals.rollback(session=session, to_version=1, actor=LEAD, reason="late rate jumped after v2")
    assert rollback.kind == "rollback" and rollback.status == "applied" and _active(seeded) == 1
    with seeded.sessions() as session:
        assert audit.verify(session=session).ok
        assert session.scalar(select(func.count()).select_from(RulesetVersion)) == 2


def test_a_version_stored_before_a_setting_existed_can_be_changed_at_it_and_diffs_cleanly(seeded, policy):
    # Version 1 as an older release stored it: without weekday caps or a target risk.
    with transaction(sessions=seeded.sessions) as session:
        version = session.get(RulesetVersion, 1)
        old = dict(version.content)
        old["eligibility"] = {
            **old["eligibility"],
            "capacity": {
                k: v for k, v in old["eligibility"]["capacity"].items() if k in ("id", "default_share", "overrides")
            },
        }
        version.content = old
    cap = [{"op": "add", "path": "/eligibility/capacity/weekday_overrides/DC02", "value": {"mon": 300}}]
    proposal = _propose(
        seeded, policy, diff=cap, target="capacity:DC02:mon", evidence={"current_caps": {"DC02/mon": 400}}
    )
    assert proposal.required_approvals == 2
    _approve(seeded, policy, proposal.id)
    applied = _approve(seeded, policy, proposal.id, actor=SECOND_LEAD)
    assert applied.status == "applied"
    with seeded.sessions() as session:
        first, second = rulesets.get(session=session, number=1), rulesets.get(session=session, number=2)
        changes = rulesets.diff(old=rulesets.normalized(version=first), new=rulesets.normalized(version=second))
    assert changes == [{"op": "add", "path": "/eligibility/capacity/weekday_overrides/DC02", "value": {"mon": 300}}]
