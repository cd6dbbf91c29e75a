"""Roles and tokens over HTTP, on SQLite and PostgreSQL: every endpoint admits exactly its roles."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from approvals import rulesets
from approvals.db import transaction
from features.online import OnlineFeatureState
from rules.schema import load_ruleset, seed_ruleset_path
from serving.app import create_app
from serving.runtime import Runtime
from serving.scorer import ModelSet
from serving.settings import Settings
from tests.conftest import bearer

ROLES = ("router", "ops_lead", "data_scientist", "admin")
READERS = {"ops_lead", "data_scientist", "admin"}
# The specification: who may call what (health, readiness and metrics are open to all).
MATRIX = [
    ("POST", "/v1/risk-scores", {"router"}),
    ("POST", "/v1/routing/decisions", {"router"}),
    ("POST", "/v1/routing/reroute", {"router"}),
    ("POST", "/v1/events", {"router"}),
    ("GET", "/v1/proposals", READERS),
    ("GET", "/v1/proposals/1", READERS),
    ("POST", "/v1/proposals", {"data_scientist", "ops_lead"}),
    ("POST", "/v1/proposals/1/approve", {"ops_lead"}),
    ("POST", "/v1/proposals/1/reject", {"ops_lead"}),
    ("POST", "/v1/proposals/1/withdraw", {"data_scientist", "ops_lead", "admin"}),
    ("POST", "/v1/proposals/1/rebase", {"data_scientist", "ops_lead"}),
    ("GET", "/v1/rulesets", READERS),
    ("GET", "/v1/rulesets/active", READERS),
    ("GET", "/v1/rulesets/diff?from=1&to=1", READERS),
    ("GET", "/v1/rulesets/1", READERS),
    ("POST", "/v1/rulesets/rollback", {"ops_lead"}),
    ("GET", "/v1/audit", {"ops_lead", "admin"}),
    ("GET", "/v1/audit/verify", {"ops_lead", "admin"}),
    ("GET", "/v1/tokens", {"admin"}),
    ("POST", "/v1/tokens", {"admin"}),
    ("DELETE", "/v1/tokens/nobody?reason=test", {"admin"}),
]


@pytest.fixture()
def service(database, tmp_path):
    """The service on a seeded database of each backend (no models, empty features: rules still decide)."""
    with transaction(sessions=database.sessions) as session:
        version = rulesets.ensure_seeded(session=session, ruleset=load_ruleset(path=seed_ruleset_path()))
        ruleset = rulesets.to_ruleset(version=version)
    runtime = Runtime(
        settings=Settings(auth_cache_seconds=60, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
        ruleset=ruleset,
        ruleset_version=1,
        models=ModelSet(),
        state=OnlineFeatureState(),
        database=database,
    )
    with TestClient(create_app(runtime=runtime)) as client:
        client.headers_by_role = {role: bearer(database, role=role) for role in ROLES}
        yield client


def _template(url: str) -> str:
    """The OpenAPI path of a matrix URL (ids become their path parameters)."""
    path = url.split("?")[0]
    path = re.sub(r"^/v1/proposals/1", "/v1/proposals/{proposal_id}", path)
    path = re.sub(r"^/v1/rulesets/1$", "/v1/rulesets/{number}", path)
    return re.sub(r"^/v1/tokens/[^/]+$", "/v1/tokens/{name}", path)


def test_the_matrix_names_every_endpoint(service):
    paths = service.get("/openapi.json").json()["paths"]
    declared = {(method.upper(), path) for path, ops in paths.items() if path.startswith("/v1") for method in ops}
    assert declared == {(method, _template(url)) for method, url, _ in MATRIX}


@pytest.mark.parametrize(("method", "url", "allowed"), MATRIX, ids=[f"{m} {u}" for m, u, _ in MATRIX])
def test_each_endpoint_is_401_without_a_token_403_for_other_roles_and_open_to_its_own(service, method, url, allowed):
    body = {} if method in ("POST",) else None
    anonymous = service.request(method, url, json=body)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    forged = service.request(method, url, json=body, headers={"Authorization": "Bearer rr_not-a-token"})
    assert forged.status_code == 401
    for role in ROLES:
        answer = service.request(method, url, json=body, headers=service.headers_by_role[role])
        if role in allowed:
            assert answer.status_code not in (401, 403), (role, answer.text)
        else:
            assert answer.status_code == 403 and role in answer.json()["detail"], (role, answer.text)


def _order():
    decided = pd.Timestamp("2026-11-02T10:00:00")
    ship_by = (decided + pd.Timedelta(hours=6)).isoformat()
    return {
        "order": {
            "order_id": "O-1",
            "dest_region": "nw",
            "tier": "plus",
            "promised_delivery": "2026-11-06",
            "decided_at": decided.isoformat(),
            "lines": [{"line_id": "L1", "sku": "K1"}],
        },
        "candidates": [
            {
                "node_id": "DC01",
                "node_type": "dc",
                "region": "nw",
                "available": {"L1": 2},
                "options": [
                    {"carrier": "parcelway", "service": "ground", "cost": 7.5, "transit_days": 2, "ship_by": ship_by}
                ],
            }
        ],
    }


def test_an_ops_lead_approves_and_the_next_decision_carries_the_new_version(service):
    role = service.headers_by_role
    assert service.post("/v1/routing/decisions", json=_order(), headers=role["router"]).json()["ruleset_version"] == 1
    proposal = service.post(
        "/v1/proposals",
        headers=role["data_scientist"],
        json={
            "kind": "rule_change",
            "target": "split",
            "diff": [{"op": "replace", "path": "/scoring/split_penalty", "value": 5.0}],
            "rationale": "splits cost more than we price",
            "evidence": {"window": "2026-10"},
        },
    )
    assert proposal.status_code == 201, proposal.text
    pid, digest = proposal.json()["id"], proposal.json()["content_hash"]
    refused = service.post(f"/v1/proposals/{pid}/approve", json={"reason": "mine"}, headers=role["data_scientist"])
    assert refused.status_code == 403
    approved = service.post(
        f"/v1/proposals/{pid}/approve",
        json={"reason": "backtest is good", "content_hash": digest},
        headers=role["ops_lead"],
    )
    assert approved.status_code == 200 and approved.json()["status"] == "applied", approved.text
    decision = service.post("/v1/routing/decisions", json=_order(), headers=role["router"]).json()
    assert decision["ruleset_version"] == 2
    diff = service.get("/v1/rulesets/diff?from=1&to=2", headers=role["ops_lead"]).json()["diff"]
    assert diff == [{"op": "replace", "path": "/scoring/split_penalty", "value": 5.0}]
    assert service.get("/v1/audit/verify", headers=role["ops_lead"]).json()["ok"] is True
    back = service.post("/v1/rulesets/rollback", json={"to_version": 1, "reason": "undo"}, headers=role["ops_lead"])
    assert back.status_code == 200 and back.json()["kind"] == "rollback"
    assert service.post("/v1/routing/decisions", json=_order(), headers=role["router"]).json()["ruleset_version"] == 1


def test_a_revoked_token_stops_working(service):
    role = service.headers_by_role
    made = service.post("/v1/tokens", json={"name": "engine-2", "role": "router"}, headers=role["admin"])
    assert made.status_code == 201 and made.json()["token"].startswith("rr_")
    engine = {"Authorization": f"Bearer {made.json()['token']}"}
    assert service.post("/v1/routing/decisions", json=_order(), headers=engine).status_code == 200
    listed = service.get("/v1/tokens", headers=role["admin"]).json()
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert service.delete("/v1/tokens/engine-2?reason=rotated", headers=role["admin"]).status_code == 204
    assert service.post("/v1/routing/decisions", json=_order(), headers=engine).status_code == 401
