"""Alembic migrations of Sirocco's SQL schema (run with ``sirocco.db.upgrade_database``)."""
