"""Following @champion: a moved alias is swapped in; a version that cannot load never breaks a request."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from features.online import warm_start
from rules.schema import load_ruleset, seed_ruleset_path
from serving.app import create_app
from serving.runtime import Runtime, load_models, refresh_models
from serving.settings import Settings
from training.datasets import default_windows
from training.train import train_model


@pytest.fixture()
def registry(tables, truth, tracking):
    """Both models trained once: version 1 is champion."""
    for name in ("carrier_delay", "node_congestion"):
        train_model(model_name=name, table=tables[name], windows=default_windows(table=tables[name]), truth=truth)
    return tracking


def _runtime(twin, tracking_uri):
    models, problems = load_models(tracking_uri=tracking_uri)
    decided = twin.shipments["allocated_at"].quantile(0.9).floor("h")
    return Runtime(
        settings=Settings(freshness_limit_minutes=240, open_routing=True),
        ruleset=load_ruleset(path=seed_ruleset_path()),
        models=models,
        state=warm_start(history=twin, as_of=decided),
        load_problems=problems,
    ), decided


def _ask(client, twin, decided):
    row = twin.shipments[twin.shipments["allocated_at"] >= decided].iloc[0]
    candidate = {
        "node_id": row.node_id,
        "node_type": row.node_type,
        "origin_region": row.origin_region,
        "carrier": row.carrier,
        "service": row.service,
        "dest_region": row.dest_region,
        "ship_by": row.ship_by.isoformat(),
        "promised_delivery": row.promised_delivery.date().isoformat(),
        "decided_at": decided.isoformat(),
    }
    return client.post("/v1/risk-scores", json={"candidates": [candidate]})


def test_a_moved_champion_is_swapped_in_and_a_corrupt_one_is_refused(registry, twin, tables, truth):
    runtime, decided = _runtime(twin, registry)
    assert runtime.models.versions() == {"carrier_delay": "1", "node_congestion": "1"}
    with TestClient(create_app(runtime=runtime)) as client:
        second = train_model(
            model_name="carrier_delay",
            table=tables["carrier_delay"],
            windows=default_windows(table=tables["carrier_delay"]),
            truth=truth,
        )
        MlflowClient().set_registered_model_alias("carrier_delay", "champion", second.version)
        changes = refresh_models(runtime=runtime)
        assert "now serving version 2" in changes["carrier_delay"]
        assert _ask(client, twin, decided).json()["model_versions"]["carrier_delay"] == "2"

        broken = MlflowClient().create_model_version("carrier_delay", source="file:///nowhere/model")
        MlflowClient().set_registered_model_alias("carrier_delay", "champion", broken.version)
        changes = refresh_models(runtime=runtime)
        assert "failed to load, still serving 2" in changes["carrier_delay"]
        answer = _ask(client, twin, decided)
        assert answer.status_code == 200
        assert answer.json()["model_versions"]["carrier_delay"] == "2" and not answer.json()["degraded"]
        assert client.get("/readyz").status_code == 503  # the failed load is reported, not hidden
