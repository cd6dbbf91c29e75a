"""Alembic environment: migrates the database named by the configured URL, online only."""

from __future__ import annotations

from alembic import context

import approvals.models  # noqa: F401 - registers every table on the metadata
from approvals.db import Base, make_engine

config = context.config
engine = make_engine(url=config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
