"""The ingestion tasks' error handling, run eagerly in this process with the
real embedder: an unreachable Qdrant server is retried by the embed task, then
the document is marked failed; a bad file fails at once in the parse task."""

from __future__ import annotations

from pathlib import Path

import pytest

import ingest.models  # noqa: F401
from ingest.models import Document
from ingest.service import register_files
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.settings import Settings
from workers.app import create_celery
from workers.tasks import PARSE_DOCUMENT

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"


@pytest.fixture()
def setup(tmp_path: Path):
    settings = Settings(
        env="test",
        data_dir=tmp_path,
        qdrant={"url": "http://127.0.0.1:1", "timeout_s": 2},  # nothing listens there
        celery={"max_retries": 2},
    )
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    app = create_celery(settings)
    app.conf.task_always_eager = True  # retries run at once, in this process
    yield settings, factory, app
    engine.dispose()


def _register(factory, name: str) -> str:
    with session_scope(factory) as s:
        (doc,) = register_files([FIXTURES / name], session=s)
        return doc.id


def test_unreachable_store_is_retried_then_marked_failed(setup):
    settings, factory, app = setup
    doc_id = _register(factory, "guide.md")
    # Parsing needs no Qdrant; the eager embed task it sends retries, then gives up.
    result = app.tasks[PARSE_DOCUMENT].apply(args=[doc_id])
    assert result.successful() and result.result > 0
    with session_scope(factory) as s:
        doc = s.get(Document, doc_id)
        assert doc.status == "failed"
        assert doc.attempts == 3  # first embedding try + max_retries
        assert doc.error.startswith("gave up after 3 attempts: Qdrant is unreachable")


def test_bad_file_fails_without_retry(setup):
    settings, factory, app = setup
    doc_id = _register(factory, "corrupt.pdf")
    result = app.tasks[PARSE_DOCUMENT].apply(args=[doc_id])
    assert result.successful() and result.result == 0
    with session_scope(factory) as s:
        doc = s.get(Document, doc_id)
        assert (doc.status, doc.attempts) == ("failed", 1)
        assert "corrupt PDF" in doc.error
