"""Unit-tier fixtures: no services, no network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def web_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for ``web/dist`` as ``make web`` leaves it (index page, a hashed
    asset, Swagger UI's files), so unit tests need no npm build."""
    root = tmp_path_factory.mktemp("web-dist")
    (root / "assets").mkdir()
    (root / "vendor" / "swagger-ui").mkdir(parents=True)
    (root / "index.html").write_text(
        '<!doctype html><html lang="en"><head><title>Sirocco</title>'
        '<script type="module" src="/assets/index-3f9a1c.js"></script></head>'
        '<body><div id="app"></div></body></html>')
    (root / "assets" / "index-3f9a1c.js").write_text("console.log('sirocco');\n")
    (root / "vendor" / "swagger-ui" / "swagger-ui-bundle.js").write_text("/* swagger */\n")
    (root / "vendor" / "swagger-ui" / "swagger-ui.css").write_text("/* swagger */\n")
    (root / "vendor" / "swagger-init.js").write_text("/* init */\n")
    return root
