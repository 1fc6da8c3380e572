"""Unit-tier fixtures: no services, no network."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

import assistant.conversations  # noqa: F401  (tables on Base.metadata)
import ingest.models  # noqa: F401  (tables on Base.metadata)
import traces.models  # noqa: F401
from sirocco.db import Base, make_session_factory


@pytest.fixture
def factory() -> Iterator[sessionmaker[Session]]:
    """Sessions on a fresh in-memory SQLite database with every table created."""
    engine = create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()
