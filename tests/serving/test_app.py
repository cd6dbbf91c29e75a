"""The service's own startup: it loads everything from its settings, and spares what it loaded from full collections."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from approvals.db import upgrade
from serving.app import create_app
from serving.settings import Settings


def test_what_the_service_loads_at_startup_is_spared_full_collections_until_it_stops(tmp_path, tracking):
    settings = Settings(data_dir=tmp_path, mlflow_tracking_uri=tracking, compile_models=False)
    upgrade(url=settings.database)
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(settings=settings)) as client:
        assert client.get("/healthz").status_code == 200
        # No models, no history: it still starts (rules decide), and what it loaded is frozen.
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0
