"""Fixtures of the approval loop: a migrated database on each backend, seeded with the seed ruleset."""

from __future__ import annotations

import pytest

from approvals import rulesets
from approvals.db import transaction
from approvals.policy import Policy
from approvals.tokens import Principal
from rules.schema import load_ruleset, seed_ruleset_path

SCIENTIST = Principal(name="dana", role="data_scientist")
LEAD = Principal(name="olu", role="ops_lead")
SECOND_LEAD = Principal(name="priya", role="ops_lead")


class FakeRegistry:
    """A model registry in memory: the promotion logic is ours, MLflow's alias move is tested in serving."""

    def __init__(self) -> None:
        self.versions = {"carrier_delay": {"1", "2", "3"}}
        self.champions = {"carrier_delay": "1"}
        self.fail = False

    def champion(self, model_name: str) -> str | None:
        return self.champions.get(model_name)

    def exists(self, model_name: str, version: str) -> bool:
        return version in self.versions.get(model_name, set())

    def promote(self, model_name: str, version: str) -> None:
        if self.fail:
            raise RuntimeError("registry unreachable")
        self.champions[model_name] = version


@pytest.fixture()
def seeded(database):
    """The database with the seed ruleset as version 1, active."""
    with transaction(sessions=database.sessions) as session:
        rulesets.ensure_seeded(session=session, ruleset=load_ruleset(path=seed_ruleset_path()))
    return database


@pytest.fixture()
def postgres_seeded(tmp_path):
    """A seeded database on PostgreSQL only (for what only PostgreSQL does)."""
    from approvals.db import open_database, upgrade
    from tests.conftest import drop_database, fresh_database_url

    url = fresh_database_url(backend="postgresql", folder=tmp_path)
    upgrade(url=url)
    database = open_database(url=url)
    with transaction(sessions=database.sessions) as session:
        rulesets.ensure_seeded(session=session, ruleset=load_ruleset(path=seed_ruleset_path()))
    yield database
    database.dispose()
    drop_database(url)


@pytest.fixture()
def policy() -> Policy:
    return Policy()
