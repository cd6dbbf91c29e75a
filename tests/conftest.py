"""Shared fixtures: small twin runs (seconds, not minutes), written once per session, and MLflow stores."""

from __future__ import annotations

import os
import uuid
from datetime import date
from pathlib import Path

import mlflow
import pytest

from features.history import History, load_history
from features.offline import build_features
from features.twin.output import read_truth, write_simulation
from features.twin.scenario import Scenario, load_scenario
from features.twin.simulate import SimulationResult, simulate
from training.tracking import configure

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def small_scenario(*, days: int = 21, orders_per_day: float = 300.0, **changes) -> Scenario:
    """The default network, shorter and quieter, for tests."""
    base = load_scenario(source="default")
    demand = base.demand.model_copy(update={"base_orders_per_day": orders_per_day})
    return base.model_copy(update={"days": days, "demand": demand, **changes})


@pytest.fixture(scope="session")
def small_run() -> SimulationResult:
    """A 21-day twin run of about seven thousand shipments."""
    return simulate(scenario=small_scenario())


@pytest.fixture(scope="session")
def small_history_dir(tmp_path_factory: pytest.TempPathFactory, small_run: SimulationResult) -> Path:
    """The small run written as a history folder."""
    folder = tmp_path_factory.mktemp("twin") / "history"
    write_simulation(result=small_run, scenario=small_scenario(), seed=7, out_dir=folder)
    return folder


@pytest.fixture(scope="session")
def small_history(small_history_dir: Path) -> History:
    """The small run loaded and validated as a History."""
    history, _ = load_history(path=small_history_dir)
    return history


# Ten quiet weeks (no Black Friday): a regime the small windows can learn and be tested on.
TRAINING_SCENARIO = dict(days=70, orders_per_day=450, start_date=date(2026, 5, 1))


@pytest.fixture(scope="session")
def twin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ten-week twin history on disk (about 31 thousand shipments)."""
    scenario = small_scenario(**TRAINING_SCENARIO)
    folder = tmp_path_factory.mktemp("training-twin") / "history"
    write_simulation(result=simulate(scenario=scenario), scenario=scenario, seed=7, out_dir=folder)
    return folder


@pytest.fixture(scope="session")
def twin(twin_dir: Path) -> History:
    """The ten-week twin, loaded."""
    return load_history(path=twin_dir)[0]


@pytest.fixture(scope="session")
def tables(twin: History):
    """Feature tables of both models."""
    return build_features(history=twin)


@pytest.fixture(scope="session")
def truth(twin_dir: Path):
    """The twin's probabilities by shipment."""
    return read_truth(folder=twin_dir).set_index("shipment_id")


@pytest.fixture(scope="session")
def champions_store(tables, truth, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An MLflow store where both models were trained once on the ten-week twin (version 1 is champion).

    Read-only for its users (they configure it before loading); tests that move aliases use `tracking`.
    """
    from training.datasets import default_windows
    from training.train import train_model

    uri = configure(tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('champions') / 'mlflow.db'}")
    for name in ("carrier_delay", "node_congestion"):
        train_model(model_name=name, table=tables[name], windows=default_windows(table=tables[name]), truth=truth)
    return uri


def served_models(*, store: str):
    """Both champions of a store, as the service holds them."""
    from serving.scorer import ModelSet
    from training.tracking import load_registered

    configure(tracking_uri=store)
    return ModelSet(
        carrier_delay=load_registered(model_name="carrier_delay", alias="champion"),
        node_congestion=load_registered(model_name="node_congestion", alias="champion"),
    )


@pytest.fixture()
def tracking(tmp_path: Path) -> str:
    """A fresh MLflow store (SQLite + local artifacts) for one test."""
    uri = configure(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    yield uri
    mlflow.end_run()


POSTGRES_URL = os.environ.get("RISKROUTE_TEST_DATABASE_URL")
NO_POSTGRES = "PostgreSQL tests need RISKROUTE_TEST_DATABASE_URL (.ci/run sets it to the local server)"


def fresh_database_url(*, backend: str, folder: Path) -> str:
    """An empty database of the backend: a SQLite file, or a private schema on the test PostgreSQL."""
    if backend == "sqlite":
        return f"sqlite:///{folder / 'riskroute.db'}"
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    from sqlalchemy import create_engine, text

    schema = f"riskroute_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"


def drop_database(url: str) -> None:
    """Remove a PostgreSQL test schema (SQLite files go with their temporary folder)."""
    if "search_path%3D" not in url:
        return
    from sqlalchemy import create_engine, text

    schema = url.rsplit("search_path%3D", 1)[1]
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, un-migrated database on each backend."""
    url = fresh_database_url(backend=request.param, folder=tmp_path)
    yield url
    drop_database(url)


def migrated_sqlite(*, folder: Path):
    """A migrated embedded database, as `make run` leaves it."""
    from approvals.db import open_database, upgrade

    url = f"sqlite:///{folder / 'riskroute.db'}"
    upgrade(url=url)
    return open_database(url=url)


@pytest.fixture()
def database(database_url: str):
    """A migrated database on each backend."""
    from approvals.db import open_database, upgrade

    upgrade(url=database_url)
    opened = open_database(url=database_url)
    yield opened
    opened.dispose()


def bearer(database, *, role: str, name: str | None = None) -> dict[str, str]:
    """Authorization headers with a new token of the role."""
    from approvals import tokens
    from approvals.db import transaction

    with transaction(sessions=database.sessions) as session:
        token = tokens.create(
            session=session, name=name or f"{role}-{uuid.uuid4().hex[:6]}", role=role, created_by="test"
        )
    return {"Authorization": f"Bearer {token}"}


def risk_candidates(*, history: History, decided, n: int) -> list[dict]:
    """The first n shipments allocated from `decided` on, as a routing engine asks for their risk at `decided`."""
    rows = history.shipments[history.shipments["allocated_at"] >= decided].head(n)
    return [
        {
            "node_id": r.node_id,
            "node_type": r.node_type,
            "origin_region": r.origin_region,
            "carrier": r.carrier,
            "service": r.service,
            "dest_region": r.dest_region,
            "distance_km": r.distance_km,
            "ship_by": r.ship_by.isoformat(),
            "promised_delivery": r.promised_delivery.date().isoformat(),
            "decided_at": decided.isoformat(),
        }
        for r in rows.itertuples()
    ]


def queries_of(rows):
    """Risk queries for shipment rows of a history frame (their plan, at their allocation time)."""
    from rules.engine import RiskQueries

    return RiskQueries(
        decided_at=list(rows["allocated_at"]),
        node_id=list(rows["node_id"]),
        node_type=list(rows["node_type"]),
        origin_region=list(rows["origin_region"]),
        dest_region=list(rows["dest_region"]),
        carrier=list(rows["carrier"]),
        service=list(rows["service"]),
        distance_km=list(rows["distance_km"]),
        ship_by=list(rows["ship_by"]),
        promised_delivery=list(rows["promised_delivery"]),
    )
