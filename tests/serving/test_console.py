"""The ops console over HTTP, on SQLite and PostgreSQL: sign-in, CSRF, roles, the queue, deciding, history, audit."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from approvals import proposals, rulesets
from serving.app import create_app
from serving.console import charts
from serving.console.pages import COOKIE
from tests.conftest import bearer
from tests.serving.console_fixtures import console_runtime, file_lane_proposals


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture()
def console(database, small_history_dir, tmp_path):
    """The service with two real lane proposals pending, and a browser-like client per role."""
    runtime = console_runtime(database=database, tmp_path=tmp_path)
    ids = file_lane_proposals(database=database, history_dir=small_history_dir)
    app = create_app(runtime=runtime)
    with TestClient(app, follow_redirects=False) as client:
        client.tokens = {role: _token(bearer(database, role=role)) for role in ("ops_lead", "data_scientist", "router")}
        client.ids = ids
        client.database = database
        client.runtime = runtime
        yield client


def _sign_in(client: TestClient, role: str) -> str:
    """Sign in as the role; returns the CSRF token the pages carry."""
    client.cookies.clear()
    answer = client.post("/console/sign-in", data={"token": client.tokens[role]})
    assert answer.status_code == 303, answer.text
    page = client.get("/console/proposals")
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)


def _status(client: TestClient, proposal_id: int) -> str:
    with client.database.sessions() as session:
        return proposals.get(session=session, proposal_id=proposal_id).status


def test_pages_send_a_visitor_without_a_session_to_sign_in(console):
    answer = console.get("/console/proposals/1")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in?after=/console/proposals/1")


def test_sign_in_sets_an_httponly_strict_cookie_and_returns_where_the_visitor_was_going(console):
    answer = console.post(
        "/console/sign-in", data={"token": console.tokens["ops_lead"], "after": f"/console/proposals/{console.ids[0]}"}
    )
    assert answer.status_code == 303 and answer.headers["location"] == f"/console/proposals/{console.ids[0]}"
    cookie = answer.headers["set-cookie"].lower()
    assert f"{COOKIE}=" in cookie and "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie


def test_sign_in_never_redirects_off_the_console(console):
    answer = console.post("/console/sign-in", data={"token": console.tokens["ops_lead"], "after": "//evil.example/x"})
    assert answer.headers["location"] == "/console/proposals"


def test_a_bad_token_or_a_router_token_cannot_sign_in(console):
    bad = console.post("/console/sign-in", data={"token": "not-a-token"})
    assert bad.status_code == 401 and "not valid" in bad.text and COOKIE not in bad.headers.get("set-cookie", "")
    router = console.post("/console/sign-in", data={"token": console.tokens["router"]})
    assert router.status_code == 403 and "the console is for" in router.text


def test_the_queue_lists_pending_proposals_with_their_backtest_headline(console):
    _sign_in(console, "ops_lead")
    page = console.get("/console/proposals")
    assert page.status_code == 200
    for proposal_id in console.ids:
        assert f'href="/console/proposals/{proposal_id}"' in page.text
    assert "pts" in page.text and 'data-testid="active-version">1<' in page.text


def test_the_proposal_page_shows_rationale_diff_evidence_figures_and_both_charts(console):
    _sign_in(console, "ops_lead")
    page = console.get(f"/console/proposals/{console.ids[0]}")
    assert page.status_code == 200
    text = page.text
    assert "runs later than its peers" in text and "/scoring/lane_adjustments/-" in text
    assert "expected on-time rate" in text and "cost per order" in text
    assert text.count('<svg class="chart"') == 2 and "What a replay cannot know" in text
    assert 'data-testid="truth"' in text and "vs true" in text
    assert 'data-testid="approve-form"' in text and 'data-testid="reject-form"' in text


def test_an_ops_lead_approves_from_the_console_and_the_new_version_routes_at_once(console):
    csrf = _sign_in(console, "ops_lead")
    target = console.ids[0]
    page = console.get(f"/console/proposals/{target}")
    content_hash = re.search(r'name="content_hash" value="([0-9a-f]+)"', page.text).group(1)
    answer = console.post(
        f"/console/proposals/{target}/approve",
        data={"csrf": csrf, "reason": "the backtest holds up", "content_hash": content_hash},
    )
    assert answer.status_code == 303 and answer.headers["location"] == f"/console/proposals/{target}?done=approved"
    after = console.get(answer.headers["location"])
    assert "ruleset version 2 is now active" in after.text and _status(console, target) == "applied"
    assert console.runtime.ruleset_version == 2


def test_a_form_without_the_sessions_csrf_token_changes_nothing(console):
    _sign_in(console, "ops_lead")
    forged = console.post(f"/console/proposals/{console.ids[0]}/reject", data={"csrf": "0" * 64, "reason": "forged"})
    assert forged.status_code == 403 and "CSRF" in forged.text
    missing = console.post(f"/console/proposals/{console.ids[0]}/reject", data={"reason": "forged"})
    assert missing.status_code == 422 and "csrf" in missing.text
    assert _status(console, console.ids[0]) == "pending"


def test_a_data_scientist_sees_no_decision_form_and_cannot_post_one(console):
    csrf = _sign_in(console, "data_scientist")
    page = console.get(f"/console/proposals/{console.ids[0]}")
    assert 'data-testid="approve-form"' not in page.text and "only an ops lead can approve" in page.text
    forced = console.post(
        f"/console/proposals/{console.ids[0]}/approve", data={"csrf": csrf, "reason": "mine", "content_hash": "x" * 64}
    )
    assert forced.status_code == 403 and "only an ops lead" in forced.text
    assert _status(console, console.ids[0]) == "pending"


def test_a_domain_error_is_a_page_naming_the_problem(console):
    csrf = _sign_in(console, "ops_lead")
    stale = console.post(
        f"/console/proposals/{console.ids[0]}/approve", data={"csrf": csrf, "reason": "ok", "content_hash": "f" * 64}
    )
    assert stale.status_code == 409 and "text/html" in stale.headers["content-type"]
    assert "changed since you saw it" in stale.text and _status(console, console.ids[0]) == "pending"
    missing = console.get("/console/proposals/999999")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]


def test_rejecting_records_the_reason(console):
    csrf = _sign_in(console, "ops_lead")
    answer = console.post(
        f"/console/proposals/{console.ids[1]}/reject", data={"csrf": csrf, "reason": "peak week, not now"}
    )
    assert answer.status_code == 303
    page = console.get(answer.headers["location"])
    assert (
        "Rejected" in page.text and "peak week, not now" in page.text and _status(console, console.ids[1]) == "rejected"
    )


def test_ruleset_history_shows_each_diff_and_rolls_back(console):
    csrf = _sign_in(console, "ops_lead")
    page = console.get(f"/console/proposals/{console.ids[0]}")
    content_hash = re.search(r'name="content_hash" value="([0-9a-f]+)"', page.text).group(1)
    console.post(
        f"/console/proposals/{console.ids[0]}/approve",
        data={"csrf": csrf, "reason": "ok", "content_hash": content_hash},
    )
    history = console.get("/console/rulesets")
    assert 'data-testid="version-2"' in history.text and "/scoring/lane_adjustments/0" in history.text
    answer = console.post("/console/rulesets/rollback", data={"csrf": csrf, "to_version": 1, "reason": "undo"})
    assert answer.status_code == 303
    assert 'data-testid="active-version">1<' in console.get(answer.headers["location"]).text
    with console.database.sessions() as session:
        assert rulesets.active_number(session=session) == 1
    assert console.runtime.ruleset_version == 1


def test_the_audit_page_says_the_chain_verifies(console):
    _sign_in(console, "ops_lead")
    page = console.get("/console/audit")
    assert "The chain verifies" in page.text and "proposal.created" in page.text


def test_the_models_page_says_what_serves(console):
    _sign_in(console, "data_scientist")
    page = console.get("/console/models")
    assert "carrier_delay" in page.text and "historical-rate baseline" in page.text


def test_signing_out_ends_the_session(console):
    csrf = _sign_in(console, "ops_lead")
    answer = console.post("/console/sign-out", data={"csrf": csrf})
    assert answer.status_code == 303
    console.cookies.clear()  # the browser drops the cookie the response expired
    assert console.get("/console/proposals").status_code == 303


def test_charts_escape_what_they_draw_and_say_when_nothing_moves():
    lanes = [{"carrier": "<script>", "dest_region": "ne", "shipments_change": 5, "late_old": 0.1, "late_new": 0.05}]
    drawn = charts.lane_effects(lanes=lanes)
    assert "<script>" not in drawn and "&lt;script&gt;" in drawn
    assert "No lane changes volume" in charts.lane_effects(lanes=[{"shipments_change": 0}])
    flat = charts.on_time_vs_cost(
        old={"cost_per_order": 7.5, "expected_on_time": 0.9}, new={"cost_per_order": 7.5, "expected_on_time": 0.9}
    )
    assert flat.count("<circle") == 2 and "nan" not in flat


def test_the_penalty_sweep_chart_marks_today_and_names_the_lowest_point():
    sweep = [{"scale": s, "cost_per_order": 7.0 + 0.2 * s, "lateness_per_order": 3.0 / s} for s in (0.5, 1.0, 1.5)]
    drawn = charts.penalty_sweep(sweep=sweep)
    assert drawn.count("<circle") == 3 and ">today<" in drawn
    # 7.2 + 3.0 at today's penalties; 7.3 + 2.0 at one and a half times them.
    assert 'aria-label="lowest cost + lateness 9.3000 per order at 1.5 × today' in drawn


def test_a_late_penalty_proposal_page_draws_its_sweep_rather_than_listing_it(console):
    from approvals.db import transaction
    from approvals.policy import Policy
    from serving.proposing.filing import PROPOSER

    with console.database.sessions() as session:
        backtest = proposals.get(session=session, proposal_id=console.ids[0]).backtest
    sweep = [{"scale": s, "cost_per_order": 7.0 + s, "lateness_per_order": 3.0 / s} for s in (0.5, 1.0, 1.5)]
    with transaction(sessions=console.database.sessions) as session:
        proposal = proposals.create(
            session=session,
            kind="rule_change",
            target="weights:late_penalty",
            diff=[{"op": "replace", "path": "/scoring/late_penalty_by_tier/premium", "value": 60.0}],
            rationale="Valuing a late order at premium 90, a higher premium penalty costs less in total.",
            evidence={"lateness_valued_at": {"premium": 90.0}, "sweep": sweep},
            backtest=backtest,
            proposer=PROPOSER,
            policy=Policy(),
        )
    _sign_in(console, "ops_lead")
    text = console.get(f"/console/proposals/{proposal.id}").text
    assert text.count('<svg class="chart"') == 3 and 'data-testid="sweep"' in text
    assert "lateness valued at" in text and "lateness_per_order" not in text
