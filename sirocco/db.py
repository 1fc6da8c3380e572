"""SQL engine and sessions (SQLAlchemy 2). Tables live with their owners
(``ingest.models``, ``traces.models``) on the one ``Base`` declared here;
schema changes go through the Alembic migrations in ``sirocco/migrations``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Engine, Executable, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from sirocco.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import CursorResult


class Base(DeclarativeBase):
    pass


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(settings: Settings) -> Engine:
    """An engine for ``settings.database_url``; SQLite gets WAL and a busy timeout
    because the API and worker processes write to the same file."""
    url = settings.database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, echo=settings.db.echo, connect_args={"timeout": 30, "check_same_thread": False}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: no fsync per commit (only at checkpoints); a crashed or
            # killed process loses nothing, a power cut at most the last commits.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, echo=settings.db.echo, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


#: Key of the PostgreSQL advisory lock that serialises concurrent upgrades
#: (the API and the workers may start at the same time).
_MIGRATION_LOCK_KEY = 0x5152_4F43  # "SIRO" - any constant shared by all processes


def redacted_url(url: str) -> str:
    """``url`` fit to print or log: its password replaced by ``***``."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: show no part of it that could be secret
        return url.split("@", 1)[-1] if "@" in url else url


def upgrade_database(settings: Settings, *, engine: Engine | None = None,
                     revision: str = "head") -> None:
    """Bring the schema at ``settings.database_url`` (or ``engine``) to ``revision``
    by running the Alembic migrations shipped in ``sirocco/migrations``.

    Needs no ``alembic.ini``: the configuration is built here, so it works from an
    installed package and from any working directory. Idempotent.
    """
    from pathlib import Path

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    owned = engine is None
    bind = make_engine(settings) if engine is None else engine
    try:
        with bind.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                   {"k": _MIGRATION_LOCK_KEY})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        if owned:
            bind.dispose()


def rows_changed(session: Session, statement: Executable) -> int:
    """Run an UPDATE or DELETE; the number of rows it changed (a conditional
    UPDATE's way of saying whether it won)."""
    return int(cast("CursorResult[Any]", session.execute(statement)).rowcount)
