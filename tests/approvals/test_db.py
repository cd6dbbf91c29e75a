"""The database: created only by migrations, and a service refuses one that is not migrated."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from approvals.db import current_revision, head_revision, make_engine, open_database, upgrade
from approvals.errors import DatabaseNotMigrated


def test_migrations_build_every_table_from_an_empty_database(database_url):
    before, after = upgrade(url=database_url)
    assert before is None and after == head_revision()
    engine = make_engine(url=database_url)
    assert "events" in inspect(engine).get_table_names()
    assert current_revision(engine=engine) == head_revision()
    engine.dispose()
    assert upgrade(url=database_url) == (head_revision(), head_revision())


def test_an_unmigrated_database_is_refused_with_the_command_that_fixes_it(database_url):
    with pytest.raises(DatabaseNotMigrated, match="riskroute db upgrade"):
        open_database(url=database_url)
