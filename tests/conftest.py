"""Shared test helpers: reaching the real services the integration tier needs.

On a machine without PostgreSQL or Redis those tests skip with the reason;
in CI (``CI`` set) an unreachable service fails the run instead, so a green
CI always means the real services were used.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

IN_CI = bool(os.environ.get("CI"))
TEST_DATABASE_URL = os.environ.get("SIROCCO_TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("SIROCCO_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, default_port: int) -> str:
    """Return ``url`` if the service answers; otherwise skip (or fail in CI)."""
    if url and _reachable(url, default_port):
        return url
    reason = f"{name} not reachable at {url or '(SIROCCO_TEST_* url unset)'}"
    if IN_CI:
        pytest.fail(f"{reason}: CI needs the real service")
    pytest.skip(reason)


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
