"""Schemathesis against /openapi.json: whatever a client sends, the service never answers 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from approvals import rulesets
from approvals.db import transaction
from features.online import warm_start
from rules.schema import load_ruleset, seed_ruleset_path
from serving.app import create_app
from serving.runtime import Runtime, load_models
from serving.settings import Settings
from tests.conftest import bearer, migrated_sqlite


@pytest.fixture(scope="module")
def app(twin, champions_store, tmp_path_factory):
    """The service with real models and warm features, as a routing engine meets it."""
    uri = champions_store
    models, problems = load_models(tracking_uri=uri)
    decided = twin.shipments["allocated_at"].quantile(0.9).floor("h")
    runtime = Runtime(
        # Routing endpoints open (as on a trusted network) so every case reaches the engine; the rest need tokens.
        settings=Settings(max_batch=50, open_routing=True, mlflow_tracking_uri=uri),
        ruleset=load_ruleset(path=seed_ruleset_path()),
        models=models,
        state=warm_start(history=twin, as_of=decided),
        load_problems=problems,
        database=migrated_sqlite(folder=tmp_path_factory.mktemp("db")),
        history_end=decided,
    )
    with transaction(sessions=runtime.database.sessions) as session:
        rulesets.ensure_seeded(session=session, ruleset=runtime.ruleset)
    application = create_app(runtime=runtime)
    application.state.runtime = runtime
    application.state.fuzz_headers = {
        "admin": bearer(runtime.database, role="admin"),
        "ops_lead": bearer(runtime.database, role="ops_lead"),
    }
    return application


def test_no_request_gets_a_server_error(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/risk-scores",
        "/v1/routing/decisions",
        "/v1/routing/reroute",
        "/v1/events",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case):
            role = "admin" if case.path.startswith("/v1/tokens") else "ops_lead"
            case.call_and_validate(headers=app.state.fuzz_headers[role], checks=[not_a_server_error])

        fuzz()
