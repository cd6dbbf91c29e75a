"""POST /v1/events: recorded once in the database, applied to every worker's online features."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from approvals.db import upgrade
from features.events import events_from_history
from features.online import warm_start
from rules.schema import load_ruleset, seed_ruleset_path
from serving import schemas
from serving.app import create_app
from serving.runtime import Runtime, start, sync_events
from serving.scorer import ModelSet, query_rows
from serving.settings import Settings
from tests.conftest import migrated_sqlite, queries_of

EVENT_MODELS = {
    "allocated": schemas.AllocatedEvent,
    "handed_over": schemas.HandedOverEvent,
    "delivered": schemas.DeliveredEvent,
    "exception": schemas.ExceptionEvent,
    "node_capacity": schemas.NodeCapacityEvent,
    "disruption_notice": schemas.DisruptionNoticeEvent,
}


def _as_json(value):
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def api_events(frame: pd.DataFrame) -> list[dict]:
    """History events as a sender would post them: each type with its own fields, nothing missing sent."""
    posted = []
    for record in frame.to_dict("records"):
        fields = EVENT_MODELS[record["event_type"]].model_fields
        event = {}
        for key, value in record.items():
            if key not in fields or value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            if value is pd.NaT:
                continue
            event[key] = _as_json(value)
        if record["event_type"] == "allocated":
            event["promised_delivery"] = pd.Timestamp(record["promised_delivery"]).date().isoformat()
        posted.append(event)
    return posted


@pytest.fixture(scope="module")
def window(twin):
    """Two days of events ending at the decision time the tests ask at."""
    decided = twin.shipments["allocated_at"].quantile(0.9).floor("h")
    return decided - pd.Timedelta(days=2), decided


def _runtime(*, twin, as_of, database) -> Runtime:
    return Runtime(
        # Events from a trusted network: authentication has its own tests.
        settings=Settings(events_poll_seconds=0.05, open_routing=True),
        ruleset=load_ruleset(path=seed_ruleset_path()),
        models=ModelSet(),
        state=warm_start(history=twin, as_of=as_of),
        database=database,
        history_end=as_of,
    )


@pytest.fixture()
def migrated(tmp_path):
    database = migrated_sqlite(folder=tmp_path)
    yield database
    database.dispose()


def _rows(twin, decided, n=300):
    rows = twin.shipments[twin.shipments["allocated_at"] >= decided].head(n).copy()
    rows["allocated_at"] = decided
    return rows.reset_index(drop=True)


def _assert_same_features(a: dict, b: dict) -> None:
    for name in a:
        left, right = a[name], b[name]
        if left.dtype == object:
            assert list(left) == list(right), name
        else:
            assert np.allclose(left.astype(float), right.astype(float), equal_nan=True), name


def test_events_sent_through_the_api_give_the_features_a_full_replay_gives(twin, window, migrated):
    start_at, decided = window
    events = events_from_history(history=twin)
    sent = api_events(events[(events["event_time"] >= start_at) & (events["event_time"] < decided)])
    assert len(sent) > 1_500 and {e["event_type"] for e in sent} >= {"allocated", "delivered", "node_capacity"}
    runtime = _runtime(twin=twin, as_of=start_at, database=migrated)
    with TestClient(create_app(runtime=runtime)) as client:
        for i in range(0, len(sent), 2_000):
            answer = client.post("/v1/events", json={"events": sent[i : i + 2_000]})
            assert answer.status_code == 200, answer.text
    rows = _rows(twin, decided)
    replayed = warm_start(history=twin, as_of=decided)
    with runtime.state_lock:
        _assert_same_features(runtime.state.features(rows=rows), replayed.features(rows=rows))
    # Not vacuous: two days of events moved the features of these rows.
    before = warm_start(history=twin, as_of=start_at).features(rows=rows)
    assert not np.allclose(before["assigned_today"].astype(float), replayed.features(rows=rows)["assigned_today"])


def test_a_resent_event_is_a_duplicate_and_a_reused_id_is_a_409(twin, window, migrated):
    start_at, decided = window
    event = {
        "event_id": "cap-1",
        "event_type": "node_capacity",
        "event_time": "2030-01-02T00:00:00",
        "node_id": "N1",
        "capacity": 120,
    }
    runtime = _runtime(twin=twin, as_of=start_at, database=migrated)
    with TestClient(create_app(runtime=runtime)) as client:
        first = client.post("/v1/events", json={"events": [event]}).json()
        again = client.post("/v1/events", json={"events": [event]}).json()
        clash = client.post("/v1/events", json={"events": [{**event, "capacity": 80}]})
    assert first["accepted"] == 1 and first["duplicates"] == []
    assert again["accepted"] == 0 and again["duplicates"] == ["cap-1"]
    assert clash.status_code == 409 and "cap-1" in clash.json()["detail"] and clash.json()["request_id"]


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (
            {"event_type": "node_capacity", "event_time": "2030-01-02T08:00:00", "node_id": "N1", "capacity": 1},
            "event_time",
        ),
        ({"event_type": "handed_over", "event_time": "2030-01-02T08:00:00"}, "shipment_id"),
        ({"event_type": "handed_over", "event_time": "1900-01-02T08:00:00", "shipment_id": "S"}, "event_time"),
        (
            {
                "event_type": "exception",
                "event_time": "2030-01-02T08:00:00",
                "shipment_id": "S",
                "exception_code": "meteor",
            },
            "exception_code",
        ),
        ({"event_type": "teleported", "event_time": "2030-01-02T08:00:00"}, "event_type"),
    ],
)
def test_a_bad_event_is_a_422_naming_its_field_and_records_nothing(twin, window, migrated, event, field):
    runtime = _runtime(twin=twin, as_of=window[0], database=migrated)
    good = {"event_id": "fine", "event_type": "delivered", "event_time": "2030-01-02T09:00:00", "shipment_id": "S"}
    with TestClient(create_app(runtime=runtime)) as client:
        answer = client.post("/v1/events", json={"events": [good, {"event_id": "bad", **event}]})
    assert answer.status_code == 422
    problems = answer.json()["detail"]
    assert any(field in [*map(str, p["loc"]), *p["msg"].split("'")] for p in problems), problems
    assert sync_events(runtime=runtime) == 0 and runtime.journal_seq == 0


def test_another_worker_applies_recorded_events_within_its_polling_interval(twin, window, migrated):
    start_at, decided = window
    events = events_from_history(history=twin)
    sent = api_events(events[(events["event_time"] >= start_at) & (events["event_time"] < decided)].head(400))
    writer = _runtime(twin=twin, as_of=start_at, database=migrated)
    reader = _runtime(twin=twin, as_of=start_at, database=migrated)
    with TestClient(create_app(runtime=writer)) as w, TestClient(create_app(runtime=reader)):
        assert w.post("/v1/events", json={"events": sent}).status_code == 200
        deadline = time.monotonic() + 10
        while reader.journal_seq < writer.journal_seq and time.monotonic() < deadline:
            time.sleep(0.05)
    assert reader.journal_seq == writer.journal_seq == len(sent)
    assert reader.state.last_event_at == writer.state.last_event_at > start_at
    rows = query_rows(queries=queries_of(_rows(twin, decided, n=50)))
    _assert_same_features(reader.state.features(rows=rows), writer.state.features(rows=rows))


def test_recorded_events_survive_a_restart(twin_dir, tmp_path, tracking):
    url = f"sqlite:///{tmp_path / 'riskroute.db'}"
    upgrade(url=url)
    settings = Settings(database_url=url, warm_start_history=twin_dir, mlflow_tracking_uri=tracking)
    first = start(settings=settings)
    after_history = first.history_end.ceil("D") + pd.Timedelta(days=1)
    body = schemas.EventsCreate.model_validate(
        {
            "events": [
                {
                    "event_id": "cap-next",
                    "event_type": "node_capacity",
                    "event_time": after_history.isoformat(),
                    "node_id": "N1",
                    "capacity": 50,
                }
            ]
        }
    )
    from serving.runtime import record_events

    record_events(runtime=first, body=body, request_id="r1")
    first.database.dispose()
    second = start(settings=settings)
    assert second.state.last_event_at == after_history and second.journal_seq == 1
    second.database.dispose()


def test_without_a_database_events_are_a_503_saying_so(twin, window):
    runtime = _runtime(twin=twin, as_of=window[0], database=None)
    event = {"event_id": "e", "event_type": "delivered", "event_time": "2030-01-02T09:00:00", "shipment_id": "S"}
    with TestClient(create_app(runtime=runtime)) as client:
        answer = client.post("/v1/events", json={"events": [event]})
    assert answer.status_code == 503 and "database" in answer.json()["detail"]


def test_syncs_racing_each_other_apply_every_event_exactly_once(twin, window, migrated):
    from concurrent.futures import ThreadPoolExecutor

    from approvals import journal

    start_at, decided = window
    events = events_from_history(history=twin)
    sent = api_events(events[(events["event_time"] >= start_at) & (events["event_time"] < decided)].head(2_500))
    payloads = [e.model_dump(mode="json", exclude_none=True) for e in schemas.EventsCreate(events=sent).events]
    journal.record_events(sessions=migrated.sessions, events=payloads)
    raced = _runtime(twin=twin, as_of=start_at, database=migrated)
    alone = _runtime(twin=twin, as_of=start_at, database=migrated)
    with ThreadPoolExecutor(max_workers=4) as pool:
        applied = sum(pool.map(lambda _: sync_events(runtime=raced), range(4)))
    assert applied == sync_events(runtime=alone) == len(sent)
    assert raced.journal_seq == alone.journal_seq == len(sent)
    rows = query_rows(queries=queries_of(_rows(twin, decided, n=50)))
    _assert_same_features(raced.state.features(rows=rows), alone.state.features(rows=rows))
