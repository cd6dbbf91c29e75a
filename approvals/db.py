"""The database: engine, declarative base, sessions, and the migration check the service starts with.

SQLite is the embedded default; PostgreSQL is reached through `RISKROUTE_DATABASE_URL`. The schema
is created only by Alembic migrations (`riskroute db upgrade`), never by `create_all`, so every
database in use has a known revision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from approvals.errors import DatabaseNotMigrated, DatabaseUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")
# Stable constraint names, so migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every table riskroute keeps."""

    metadata = MetaData(naming_convention=NAMING)


def make_engine(*, url: str) -> Engine:
    """An engine for the URL; SQLite files get their folder, foreign keys and a busy timeout."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record) -> None:  # noqa: ANN001 - DB-API connection
            # SQLAlchemy, not the driver, starts transactions (below): see SQLAlchemy's pysqlite notes.
            connection.isolation_level = None
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _write_lock_up_front(connection) -> None:  # noqa: ANN001 - SQLAlchemy connection
            # Take the write lock when the transaction starts: two writers then queue instead of
            # both reading first and one failing to upgrade its lock (SQLite's "database is locked").
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(*, engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to the engine; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@dataclass(frozen=True)
class Database:
    """An engine and its session factory."""

    engine: Engine
    sessions: sessionmaker[Session]

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def open_database(*, url: str, migrated: bool = True) -> Database:
    """Connect; with `migrated`, refuse a database that is not at the code's migration head."""
    engine = make_engine(url=url)
    if migrated:
        try:
            require_current(engine=engine)
        except Exception:
            engine.dispose()
            raise
    return Database(engine=engine, sessions=session_factory(engine=engine))


@contextmanager
def transaction(*, sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block ends, roll everything back if it raises."""
    with sessions() as session, session.begin():
        yield session


def _alembic_config(*, url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest migration the code knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(url="sqlite://")).get_current_head()


def current_revision(*, engine: Engine) -> str | None:
    """The revision the database is at (None when it was never migrated)."""
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        raise DatabaseUnavailable(f"database {engine.url.render_as_string()} cannot be reached: {exc.orig}") from exc


def upgrade(*, url: str, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the database to `revision`; returns (before, after)."""
    from alembic import command

    engine = make_engine(url=url)
    try:
        before = current_revision(engine=engine)
        command.upgrade(_alembic_config(url=url), revision)
        return before, current_revision(engine=engine) or ""
    finally:
        engine.dispose()


def require_current(*, engine: Engine) -> str:
    """The database's revision, or a clear refusal when it is not at the code's head."""
    current, head = current_revision(engine=engine), head_revision()
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        state = "has never been migrated" if current is None else f"is at revision {current}"
        raise DatabaseNotMigrated(
            f"database {where} {state}; this version of riskroute needs revision {head}. "
            "Run `riskroute db upgrade` first."
        )
    return current


def ping(*, engine: Engine) -> str | None:
    """None when the database answers, otherwise why not."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as a reason
        return f"{type(exc).__name__}: {exc}"
