"""The hot routes' fast lane: a clean answer without the framework, everything else handed to the app intact."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from features.online import warm_start
from rules.schema import load_ruleset, seed_ruleset_path
from serving import runtime as service
from serving.app import create_app
from serving.hot import FastLane
from serving.metrics import Metrics
from serving.routers.routing import DECISIONS, REROUTE
from serving.routers.scores import RISK_SCORES
from serving.runtime import Runtime
from serving.schemas import RiskScoresCreate
from serving.settings import Settings
from tests.conftest import risk_candidates, served_models


@pytest.fixture(scope="module")
def runtime(twin, champions_store):
    decided = twin.shipments["allocated_at"].quantile(0.9).floor("h")
    return Runtime(
        settings=Settings(open_routing=True, freshness_limit_minutes=240),
        ruleset=load_ruleset(path=seed_ruleset_path()),
        models=served_models(store=champions_store),
        state=warm_start(history=twin, as_of=decided),
    )


def _body(twin) -> bytes:
    decided = twin.shipments["allocated_at"].quantile(0.9).floor("h")
    return json.dumps({"candidates": risk_candidates(history=twin, decided=decided, n=12)}).encode()


def _call(
    *, runtime: Runtime, chunks: list[bytes], headers: list[tuple[bytes, bytes]] = (), leave: bool = False
) -> tuple[list, list]:
    """Send one POST /v1/risk-scores in `chunks` through the lane (the client leaving after them, if `leave`);
    what the lane sent, and what the app received."""
    received_by_app: list[dict] = []
    sent: list[dict] = []

    async def app(scope, receive, send) -> None:
        while not received_by_app or received_by_app[-1].get("more_body"):
            received_by_app.append(await receive())
            if received_by_app[-1]["type"] == "http.disconnect":
                return

    async def run() -> None:
        incoming = [
            {"type": "http.request", "body": chunk, "more_body": leave or i < len(chunks) - 1}
            for i, chunk in enumerate(chunks)
        ] + ([{"type": "http.disconnect"}] if leave else [])

        async def receive() -> dict:
            return incoming.pop(0)

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": RISK_SCORES.path,
            "headers": list(headers),
            "app": SimpleNamespace(state=SimpleNamespace(runtime=runtime, metrics=Metrics())),
            "state": {"request_id": "req-7"},
        }
        await FastLane(app, routes=[RISK_SCORES])(scope, receive, send)

    asyncio.run(run())
    return sent, received_by_app


def test_a_valid_request_is_answered_by_the_lane_exactly_as_the_business_call_answers(twin, runtime):
    raw = _body(twin)
    sent, received_by_app = _call(runtime=runtime, chunks=[raw[:100], raw[100:]])
    assert received_by_app == []
    start, body = sent
    assert start["status"] == 200 and (b"content-type", b"application/json") in start["headers"]
    assert (b"content-length", str(len(body["body"])).encode()) in start["headers"]
    expected = service.score_candidates(
        runtime=runtime, body=RiskScoresCreate.model_validate_json(raw), request_id="req-7"
    ).model_dump(mode="json")
    assert json.loads(body["body"]) == expected


def test_an_invalid_body_goes_to_the_app_with_every_chunk_replayed(twin, runtime):
    raw = _body(twin).replace(b'"service": "', b'"service": "by-sea-')
    sent, received_by_app = _call(runtime=runtime, chunks=[raw[:100], raw[100:]])
    assert sent == []
    assert [m["body"] for m in received_by_app] == [raw[:100], raw[100:]]


def test_a_client_that_leaves_mid_body_is_handed_to_the_app_as_it_left(twin, runtime):
    raw = _body(twin)
    sent, received_by_app = _call(runtime=runtime, chunks=[raw[:100]], leave=True)
    assert sent == []
    assert received_by_app == [
        {"type": "http.request", "body": raw[:100], "more_body": True},
        {"type": "http.disconnect"},
    ]


def test_a_request_without_a_token_goes_to_the_app(twin, runtime):
    closed = Runtime(
        settings=Settings(open_routing=False),
        ruleset=runtime.ruleset,
        models=runtime.models,
        state=runtime.state,
    )
    raw = _body(twin)
    sent, received_by_app = _call(runtime=closed, chunks=[raw])  # no token
    assert sent == [] and [m["body"] for m in received_by_app] == [raw]


def test_every_hot_route_is_a_documented_post_route_of_the_app():
    paths = create_app().openapi()["paths"]
    for hot in (RISK_SCORES, DECISIONS, REROUTE):
        assert "post" in paths[hot.path]
