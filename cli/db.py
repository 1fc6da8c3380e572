"""``sirocco db``: the database schema (Alembic migrations)."""

from __future__ import annotations

import typer

from cli._utils import console, setup_logging
from sirocco.settings import get_settings

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the Alembic migrations to the configured database."""
    setup_logging()
    from sirocco.db import redacted_url, upgrade_database

    settings = get_settings()
    upgrade_database(settings)
    console.print(f"database at head: {redacted_url(settings.database_url)}")
