"""A real Celery worker process ingests tests/fixtures; then search finds known
phrases. Broker: Redis (skipped when unreachable, unless CI is set) and the
embedded SQLite broker. SQL: SQLite, or the PostgreSQL database named by
SIROCCO_TEST_DATABASE_URL (in a throw-away schema).

The worker is started like the CLI does: a new process whose get_settings()
reads SIROCCO_* environment variables.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

import ingest.models  # noqa: F401
from ingest.models import Document
from ingest.service import register_files
from retrieval.qdrant_store import QdrantStore
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.settings import Settings
from workers.app import create_celery
from workers.tasks import enqueue_documents

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
REDIS_URL = "redis://127.0.0.1:6379/13"  # a database number kept for these tests
EXPECTED = {
    "guide.md": "done",
    "latin1.txt": "done",
    "page.html": "done",
    "manual.pdf": "done",
    "report.docx": "done",
    "empty.txt": "failed",
    "corrupt.pdf": "failed",
    "encrypted.pdf": "failed",
}


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is required in CI: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")


@pytest.fixture(scope="module")
def embedder():
    from ingest.st_embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(Settings())


@pytest.fixture()
def database_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """SQLite in tmp_path, or a fresh schema in SIROCCO_TEST_DATABASE_URL."""
    if not os.environ.get("SIROCCO_TEST_DATABASE_URL"):
        return f"sqlite:///{tmp_path / 'sirocco.db'}"
    return request.getfixturevalue("postgres_schema_url")


def _start_worker(env: dict[str, str], queue: str, log: Path) -> subprocess.Popen:
    code = (
        "from sirocco.settings import get_settings; from workers.app import run_worker; "
        f"run_worker(get_settings(), loglevel='info', concurrency=1, queues=[{queue!r}])"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # warm shutdown
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and its pool children
            proc.wait(timeout=10)


def _wait_for(
    factory, ids: list[str], proc, log: Path, timeout: float = 300
) -> dict[str, Document]:
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(factory) as s:
            docs = {d.id: d for d in s.scalars(select(Document).where(Document.id.in_(ids)))}
        if all(d.status in ("done", "failed") for d in docs.values()):
            return docs
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text()[-4000:]
            states = {Path(d.source_path).name: d.status for d in docs.values()}
            pytest.fail(f"worker did not finish (rc={proc.poll()}): {states}\n{tail}")
        time.sleep(0.5)


@pytest.mark.parametrize("broker", ["redis", "embedded"])
def test_worker_ingests_fixtures_and_search_finds_them(broker, tmp_path, database_url, embedder):
    if broker == "redis":
        _redis_or_skip()
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
    proc = _start_worker(env, queue, log)
    try:
        # Enqueued after the commit above, while the worker is still starting.
        assert len(enqueue_documents(app, ids, queue=queue)) == len(ids)
        docs = _wait_for(factory, ids, proc, log)
        by_name = {Path(d.source_path).name: d for d in docs.values()}
        assert {n: d.status for n, d in by_name.items()} == EXPECTED
        assert "encrypted PDF" in by_name["encrypted.pdf"].error
        assert by_name["empty.txt"].error.endswith("empty.txt is empty")
        assert by_name["report.docx"].title == "Mistral Division Report"
        assert by_name["manual.pdf"].chunk_count == 2

        # Search from this process while the worker still runs (shared local store).
        store = QdrantStore(settings)
        assert store.count() == sum(d.chunk_count for d in docs.values())
        hits = store.search(
            embedder.embed_query("How often must the turbine be serviced?"), top_k=3, tenant="acme"
        )
        assert hits[0].doc_id == by_name["manual.pdf"].id and hits[0].page == 2
        assert "serviced every 400 hours" in hits[0].text
        hits = store.search(
            embedder.embed_query("Mistral division quarterly revenue growth"),
            top_k=3,
            tenant="acme",
        )
        assert hits[0].doc_id == by_name["report.docx"].id
        assert hits[0].headings[0] == "Results"
        assert store.search(embedder.embed_query("turbine"), top_k=3, tenant="other") == []

        # Re-ingesting a document replaces its chunks (same ids, no duplicates).
        before = store.count()
        pdf_id = by_name["manual.pdf"].id
        with session_scope(factory) as session:
            session.get(Document, pdf_id).status = "queued"
        enqueue_documents(app, [pdf_id], queue=queue)
        _wait_for(factory, [pdf_id], proc, log)
        assert store.count() == before
    finally:
        _stop_worker(proc)
        engine.dispose()
        if broker == "redis":
            import redis

            r = redis.Redis.from_url(REDIS_URL)
            r.delete(queue, *r.keys(f"*{queue}*"))  # the queue and kombu's binding keys
    assert proc.returncode == 0, log.read_text()[-3000:]
