"""The HTTP API as a routing engine calls it, against real registered models and warm online features."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features.online import warm_start
from rules.schema import load_ruleset, seed_ruleset_path
from serving.app import REQUEST_ID_HEADER, create_app
from serving.runtime import Runtime
from serving.scorer import ModelSet
from serving.settings import Settings
from tests.conftest import bearer, migrated_sqlite, risk_candidates, served_models


@pytest.fixture(scope="module")
def decided(twin):
    """The decision time the tests ask at: inside the history, after the state's last event."""
    return twin.shipments["allocated_at"].quantile(0.9).floor("h")


@pytest.fixture(scope="module")
def client(twin, champions_store, decided, tmp_path_factory):
    runtime = Runtime(
        settings=Settings(max_batch=100, freshness_limit_minutes=240),
        ruleset=load_ruleset(path=seed_ruleset_path()),
        models=served_models(store=champions_store),
        state=warm_start(history=twin, as_of=decided),
        database=migrated_sqlite(folder=tmp_path_factory.mktemp("db")),
    )
    with TestClient(create_app(runtime=runtime)) as test_client:
        test_client.headers.update(bearer(runtime.database, role="router"))
        yield test_client


def test_risk_scores_price_every_candidate_with_model_versions(client, twin, decided):
    response = client.post(
        "/v1/risk-scores",
        json={"candidates": risk_candidates(history=twin, decided=decided, n=50), "explain": True},
        headers={REQUEST_ID_HEADER: "req-1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers[REQUEST_ID_HEADER] == "req-1" == body["request_id"]
    assert body["model_versions"] == {"carrier_delay": "1", "node_congestion": "1"}
    assert not body["degraded"] and body["feature_freshness_seconds"] < 3600
    assert len(body["scores"]) == 50
    first = body["scores"][0]
    assert first["late_risk"] == pytest.approx(
        1 - (1 - first["carrier_delay_risk"]) * (1 - first["node_congestion_risk"])
    )
    assert len(first["explanation"]["carrier_delay"]) == 5


def test_too_many_candidates_is_413_and_bad_input_is_422_naming_the_field(client, twin, decided):
    too_many = client.post(
        "/v1/risk-scores", json={"candidates": risk_candidates(history=twin, decided=decided, n=1) * 101}
    )
    assert too_many.status_code == 413 and "limit is 100" in too_many.json()["detail"]
    bad = risk_candidates(history=twin, decided=decided, n=1)
    bad[0]["service"] = "teleport"
    invalid = client.post("/v1/risk-scores", json={"candidates": bad})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"][-1] == "service"
    assert REQUEST_ID_HEADER in invalid.headers


def test_unknown_node_and_carrier_get_fallback_risk_not_an_error(client, twin, decided):
    odd = risk_candidates(history=twin, decided=decided, n=1)
    odd[0].update(node_id="NEW-NODE", carrier="new-carrier", dest_region="atlantis")
    response = client.post("/v1/risk-scores", json={"candidates": odd})
    assert response.status_code == 200
    score = response.json()["scores"][0]
    assert 0 < score["carrier_delay_risk"] < 1 and 0 < score["node_congestion_risk"] < 1
    assert score["unknown"] == ["node", "carrier", "lane"]


def test_each_candidate_says_what_its_risk_has_no_history_of(client, twin, decided):
    past = twin.shipments[twin.shipments["allocated_at"] < decided - pd.Timedelta(days=7)]
    node = past.groupby(["node_id", "node_type"], observed=True).size().idxmax()
    lane = past.groupby(["carrier", "origin_region", "dest_region"], observed=True).size().idxmax()
    known = {
        **risk_candidates(history=twin, decided=decided, n=1)[0],
        **dict(zip(("node_id", "node_type"), node)),
        **dict(zip(("carrier", "origin_region", "dest_region"), lane)),
    }
    asked = [
        known,
        {**known, "node_id": "NEW-NODE"},
        {**known, "carrier": "new-carrier"},
        {**known, "dest_region": "atlantis"},
    ]
    scores = client.post("/v1/risk-scores", json={"candidates": asked}).json()["scores"]
    assert [s["unknown"] for s in scores] == [[], ["node"], ["carrier", "lane"], ["lane"]]
    text = client.get("/metrics").text
    for what in ("node", "carrier", "lane"):
        assert f'riskroute_unknown_history_candidates_total{{what="{what}"}}' in text


def test_stale_features_are_flagged_degraded_but_still_answered(client, twin, decided):
    later = risk_candidates(history=twin, decided=decided, n=3)
    for c in later:
        c["decided_at"] = (decided + timedelta(hours=12)).isoformat()
    body = client.post("/v1/risk-scores", json={"candidates": later}).json()
    assert body["degraded"] and any("old" in r for r in body["degraded_reasons"])


def _order_body(decided):
    ship_by = (decided + pd.Timedelta(hours=6)).isoformat()
    return {
        "order": {
            "order_id": "O-1",
            "dest_region": "nw",
            "tier": "plus",
            "promised_delivery": (decided + pd.Timedelta(days=4)).date().isoformat(),
            "decided_at": decided.isoformat(),
            "lines": [{"line_id": "L1", "sku": "K1"}, {"line_id": "L2", "sku": "K2", "hazmat": True}],
        },
        "candidates": [
            {
                "node_id": "DC01",
                "node_type": "dc",
                "region": "nw",
                "handling_cost": 1.2,
                "available": {"L1": 3, "L2": 1},
                "options": [
                    {"carrier": "parcelway", "service": "ground", "cost": 7.5, "transit_days": 2, "ship_by": ship_by},
                    {"carrier": "swiftship", "service": "two_day", "cost": 9.0, "transit_days": 2, "ship_by": ship_by},
                ],
            },
            {
                "node_id": "ST01",
                "node_type": "store",
                "region": "nw",
                "handling_cost": 2.8,
                "available": {"L1": 1},
                "options": [
                    {"carrier": "parcelway", "service": "ground", "cost": 6.0, "transit_days": 1, "ship_by": ship_by}
                ],
            },
        ],
    }


def test_a_routing_decision_comes_with_its_trace_ruleset_and_models(client, decided):
    response = client.post("/v1/routing/decisions", json=_order_body(decided))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "routed"
    assert body["ruleset_name"] == "seed" and len(body["ruleset_hash"]) == 64
    assert body["model_versions"] == {"carrier_delay": "1", "node_congestion": "1"}
    shipped = sorted(line for s in body["chosen"]["shipments"] for line in s["lines"])
    assert shipped == ["L1", "L2"]
    assert {t["node_id"] for t in body["trace"]} == {"DC01", "ST01"}
    assert any(t["excluded_by"] for t in body["trace"]) or body["runner_up"] is not None


def test_a_decision_trace_says_which_options_have_no_history_of_their_node(client, decided):
    body = _order_body(decided)
    body["candidates"].append({**body["candidates"][0], "node_id": "NEW-NODE"})
    trace = client.post("/v1/routing/decisions", json=body).json()["trace"]
    assert {t["node_id"] for t in trace if "node" in t["unknown"]} == {"NEW-NODE"}


def test_a_reroute_never_picks_what_failed(client, decided):
    body = {**_order_body(decided), "excluded": [{"node_id": "DC01", "reason": "node_rejected"}]}
    response = client.post("/v1/routing/reroute", json=body)
    assert response.status_code == 200
    decision = response.json()
    assert decision["status"] == "unroutable"  # only DC01 may ship the hazmat line
    assert "L2" in decision["unroutable_reason"]


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model_versions"]["carrier_delay"] == "1"


def test_readiness_is_503_without_models(twin, decided):
    runtime = Runtime(
        # No database here, so no tokens: the routing endpoints are opened as on a trusted network.
        settings=Settings(open_routing=True),
        ruleset=load_ruleset(path=seed_ruleset_path()),
        models=ModelSet(),
        state=warm_start(history=twin, as_of=decided),
        load_problems={"carrier_delay": "not found"},
    )
    with TestClient(create_app(runtime=runtime)) as local:
        assert local.get("/readyz").status_code == 503
        scored = local.post(
            "/v1/risk-scores", json={"candidates": risk_candidates(history=twin, decided=decided, n=2)}
        ).json()
        assert scored["degraded"] and scored["model_versions"] == {}
        assert local.post("/v1/routing/decisions", json=_order_body(decided)).json()["status"] == "routed"


def test_metrics_expose_latency_per_endpoint_models_and_degraded_answers(client, twin, decided):
    later = risk_candidates(history=twin, decided=decided, n=2)
    for c in later:
        c["decided_at"] = (decided + timedelta(hours=12)).isoformat()
    client.post("/v1/risk-scores", json={"candidates": later})
    text = client.get("/metrics").text
    assert 'riskroute_request_seconds_count{endpoint="/v1/risk-scores",method="POST",status="200"}' in text
    assert 'riskroute_model_version{model="carrier_delay"} 1.0' in text
    assert 'riskroute_degraded_responses_total{endpoint="/v1/risk-scores"}' in text
    assert 'riskroute_fallback_scores_total{model="carrier_delay"}' in text


def test_the_python_client_speaks_the_api_and_raises_with_the_request_id(client, twin, decided):
    from serving.client import RiskrouteAPIError, RiskrouteClient

    api = RiskrouteClient(http=client)
    scores = api.risk_scores(risk_candidates(history=twin, decided=decided, n=3), request_id="abc")
    assert scores["request_id"] == "abc" and len(scores["scores"]) == 3
    decision = api.decide(**_order_body(decided))
    assert decision["status"] == "routed"
    with pytest.raises(RiskrouteAPIError) as error:
        api.risk_scores(risk_candidates(history=twin, decided=decided, n=1) * 101)
    assert error.value.status == 413 and error.value.request_id
