"""Alembic environment.

Where the database comes from, first match wins:
1. ``config.attributes["connection"]``: an open connection (``upgrade_database``
   and tests pass one; the caller owns its transaction);
2. ``config.attributes["url"]`` or the ``sqlalchemy.url`` option;
3. ``get_settings().database_url`` (the CLI with ``alembic -c sirocco/alembic.ini``).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool

import assistant.conversations  # noqa: F401  (registers the conversation tables)
import assistant.pending  # noqa: F401  (and the pending tool calls)
import ingest.models  # noqa: F401  (registers the documents table)
import sirocco.auth.models  # noqa: F401  (registers the identity tables)
import traces.models  # noqa: F401  (registers the traces table)
from sirocco.db import Base
from sirocco.settings import get_settings, normalize_database_url

config = context.config
target_metadata = Base.metadata

# Only the alembic CLI has an ini file; programmatic runs keep the app's logging.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    return normalize_database_url(url) if url else get_settings().database_url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode recreates tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
