"""Fixtures for training: a ten-week twin, its features, and a private MLflow store per test module."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import mlflow
import pytest

from features.history import History, load_history
from features.offline import build_features
from features.twin.output import read_truth, write_simulation
from features.twin.simulate import simulate
from tests.conftest import small_scenario
from training.tracking import configure

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


@pytest.fixture()
def tracking(tmp_path: Path) -> str:
    """A fresh MLflow store (SQLite + local artifacts) for one test."""
    uri = configure(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    yield uri
    mlflow.end_run()
