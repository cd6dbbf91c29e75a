"""Shared fixtures: small twin runs (seconds, not minutes), written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.history import History, load_history
from features.twin.output import write_simulation
from features.twin.scenario import Scenario, load_scenario
from features.twin.simulate import SimulationResult, simulate

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
