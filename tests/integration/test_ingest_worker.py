"""A real Celery worker process ingests tests/fixtures; then search finds known
phrases. Broker: Redis (skipped when unreachable, unless CI is set) and the
embedded SQLite broker. SQL: SQLite, or the PostgreSQL database named by
SIROCCO_TEST_DATABASE_URL (in a throw-away schema).

The worker is started like the CLI does: a new process whose get_settings()
reads SIROCCO_* environment variables.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

import ingest.models  # noqa: F401
from ingest.models import Document
from ingest.service import register_files
from retrieval.factory import create_store
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.settings import Settings
from tests.integration.workerutil import REDIS_URL, purge_queue, redis_or_skip, start_worker
from tests.integration.workerutil import stop_worker as _stop_worker
from tests.integration.workerutil import wait_for as _wait_for
from workers.app import create_celery
from workers.tasks import enqueue_documents

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
EXPECTED = {
    "guide.md": "done",
    "latin1.txt": "done",
    "page.html": "done",
    "manual.pdf": "done",
    "report.docx": "done",
    "empty.txt": "failed",
    "corrupt.pdf": "failed",
    "encrypted.pdf": "failed",
    "bomb.docx": "failed",
    "budget.xlsx": "done",
    "config.json": "done",
    "minutes.odt": "done",
    "notice.eml": "done",
    "roadmap.pptx": "done",
    "tramontane.rtf": "done",
    "winds-utf16.csv": "done",
    "winds.epub": "done",
}
# really-docx.doc is skipped by the folder walk: .doc (legacy Word) is not a supported extension.

#: One question per ingested format, and a phrase of the chunk that must answer it.
PHRASES = {
    "guide.md": ("How do I reset the flux capacitor?", "hold the blue button"),
    "latin1.txt": ("À quelle heure ouvre le café ? Règlement intérieur", "sept heures"),
    "page.html": ("When does the harbour office open?", "seven in the morning"),
    "manual.pdf": ("How often must the turbine be serviced?", "serviced every 400 hours"),
    "report.docx": ("By how much did the Mistral division revenue rise?", "twelve percent"),
    "budget.xlsx": ("How many Khamsin blades are in the budget?", "Khamsin blades | 42"),
    "config.json": ("Which team owns the levante service?", "service.owner.team: winds"),
    "minutes.odt": ("What did the chinook melt?", "melted the snow"),
    "notice.eml": ("When does the bora maintenance window start?", "Friday at 22:00"),
    "roadmap.pptx": ("When does the harmattan release ship?", "ships in March"),
    "tramontane.rtf": ("What does the tramontane close on windy days?", "café terrace"),
    "winds-utf16.csv": ("Which wind blows in Zürich?", "Föhn"),
    "winds.epub": ("What did the sirocco bring from the south?", "red dust"),
}


@pytest.fixture(scope="module")
def embedder():
    from ingest.embedding.st import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(Settings())


@pytest.fixture()
def database_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """SQLite in tmp_path, or a fresh schema in SIROCCO_TEST_DATABASE_URL."""
    if not os.environ.get("SIROCCO_TEST_DATABASE_URL"):
        return f"sqlite:///{tmp_path / 'sirocco.db'}"
    return request.getfixturevalue("postgres_schema_url")


@pytest.mark.parametrize("broker", ["redis", "embedded"])
def test_worker_ingests_fixtures_and_search_finds_them(broker, tmp_path, database_url, embedder):
    if broker == "redis":
        redis_or_skip()
    collection = f"it_{uuid.uuid4().hex[:8]}"
    queue = f"sirocco-test-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIROCCO_")}
    env.update(
        {
            "SIROCCO_ENV": "test",
            "SIROCCO_DATA_DIR": str(tmp_path / "var"),
            "SIROCCO_DATABASE_URL": database_url,
            "SIROCCO_QDRANT__PATH": str(tmp_path / "qdrant"),
            "SIROCCO_QDRANT__COLLECTION": collection,
            "SIROCCO_CELERY__MAX_RETRIES": "2",
        }
    )
    if broker == "redis":
        env["SIROCCO_REDIS_URL"] = REDIS_URL
    # The same configuration, built explicitly for this process.
    settings = Settings(
        env="test",
        data_dir=tmp_path / "var",
        db={"url": database_url},
        redis={"url": REDIS_URL if broker == "redis" else None},
        qdrant={"path": str(tmp_path / "qdrant"), "collection": collection},
        celery={"queue_prefix": queue},
    )
    if broker == "embedded":
        assert settings.broker_url.startswith("sqla+sqlite:///")
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)

    with session_scope(factory) as session:
        ids = [d.id for d in register_files([FIXTURES], session=session, tenant="acme")]
    assert len(ids) == len(EXPECTED)
    app = create_celery(settings)
    log = tmp_path / "worker.log"
    proc = start_worker(env, queue, log)
    try:
        # Enqueued after the commit above, while the worker is still starting.
        assert len(enqueue_documents(app, ids)) == len(ids)
        docs = _wait_for(factory, ids, proc, log)
        by_name = {Path(d.source_path).name: d for d in docs.values()}
        assert {n: d.status for n, d in by_name.items()} == EXPECTED
        assert "encrypted PDF" in by_name["encrypted.pdf"].error
        assert by_name["empty.txt"].error.endswith("empty.txt is empty")
        assert by_name["report.docx"].title == "Mistral Division Report"
        assert by_name["manual.pdf"].chunk_count == 2
        assert "expands" in by_name["bomb.docx"].error

        # Search from this process while the worker still runs (shared local store).
        store = create_store(settings)
        assert store.count() == sum(d.chunk_count for d in docs.values())
        hits = store.search(
            embedder.embed_query("How often must the turbine be serviced?"), top_k=3, tenant="acme"
        )
        assert hits[0].doc_id == by_name["manual.pdf"].id and hits[0].page == 2
        assert "serviced every 400 hours" in hits[0].text
        hits = store.search(
            embedder.embed_query("By how much did the Mistral division revenue rise this quarter?"),
            top_k=3,
            tenant="acme",
        )
        # The spreadsheet fixture also talks about revenue: the report is in the top 3.
        report = [h for h in hits if h.doc_id == by_name["report.docx"].id]
        assert report and report[0].headings[0] == "Results", hits
        assert store.search(embedder.embed_query("turbine"), top_k=3, tenant="other") == []

        # Every format: its known phrase is retrievable (in the top 3 of 40+ chunks).
        for name, (question, phrase) in PHRASES.items():
            hits = store.search(embedder.embed_query(question), top_k=3, tenant="acme")
            found = [h for h in hits if h.doc_id == by_name[name].id and phrase in h.text]
            assert found, (name, [(Path(h.source).name, h.text[:60]) for h in hits])
        # Pages survive: PDF pages and PowerPoint slides.
        hits = store.search(embedder.embed_query("When does the harmattan release ship?"),
                            top_k=1, tenant="acme", doc_ids=[by_name["roadmap.pptx"].id])
        assert hits[0].page == 1
        hits = store.search(embedder.embed_query("Wear a harness when climbing the tower"),
                            top_k=1, tenant="acme", doc_ids=[by_name["manual.pdf"].id])
        assert hits[0].page == 1 and "harness" in hits[0].text

        # Re-ingesting a document replaces its chunks (same ids, no duplicates).
        before = store.count()
        pdf_id = by_name["manual.pdf"].id
        with session_scope(factory) as session:
            session.get(Document, pdf_id).status = "queued"
        enqueue_documents(app, [pdf_id])
        _wait_for(factory, [pdf_id], proc, log)
        assert store.count() == before
    finally:
        _stop_worker(proc)
        engine.dispose()
        if broker == "redis":
            purge_queue(queue)
    assert proc.returncode == 0, log.read_text()[-3000:]
