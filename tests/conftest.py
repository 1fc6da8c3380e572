"""Shared fixtures: the real services the integration tier needs
(skipped when absent, failed in CI: see ``tests.support``)."""

from __future__ import annotations

import os

import pytest

from tests.support import require_service

TEST_DATABASE_URL = os.environ.get("SIROCCO_TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("SIROCCO_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return require_service("PostgreSQL", TEST_DATABASE_URL, 5432)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_service("Redis", TEST_REDIS_URL, 6379)


@pytest.fixture()
def postgres_schema_url(postgres_url: str):
    """A throw-away schema in the test PostgreSQL database, as a URL whose
    connections use it; dropped after the test."""
    import uuid

    from sqlalchemy import create_engine, text

    from sirocco.settings import normalize_database_url

    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_database_url(postgres_url))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
