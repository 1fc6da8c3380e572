"""Parse messages carry batches of documents, each with its own outcome: the
tasks run eagerly in this process with the real embedder and an embedded
store. A bad file fails alone (its batch-mates are indexed), a redelivered
batch redoes only what is unfinished, and a cancelled job's batch is dropped
without touching its documents."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, event

import ingest.models  # noqa: F401
from ingest.jobs import add_items, cancel_job, create_job, get_report
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
    settings = Settings(env="test", data_dir=tmp_path,
                        qdrant={"path": str(tmp_path / "qdrant"), "collection": "batches"})
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    app = create_celery(settings)
    app.conf.task_always_eager = True  # the embed message runs at once, in this process
    yield settings, factory, app
    engine.dispose()


def _job(factory, names: list[str]) -> tuple[str, list[str]]:
    """A job over these fixtures, in this order."""
    with session_scope(factory) as s:
        docs = register_files([FIXTURES / n for n in names], session=s)
        by_name = {Path(d.source_path).name: d for d in docs}
        ordered = [by_name[n] for n in names]
        job = create_job(session=s, tenant="default", kind="ingest")
        add_items(job, ordered, session=s)
        return job.id, [d.id for d in ordered]


def _statuses(factory, ids: list[str]) -> list[str]:
    with session_scope(factory) as s:
        return [s.get(Document, i).status for i in ids]


def test_a_bad_file_fails_alone_and_a_redelivered_batch_redoes_nothing(setup):
    settings, factory, app = setup
    job_id, ids = _job(factory, ["guide.md", "corrupt.pdf", "latin1.txt"])
    result = app.tasks[PARSE_DOCUMENT].apply(args=[ids, job_id])
    assert result.successful() and result.result > 0
    assert _statuses(factory, ids) == ["done", "failed", "done"]
    with session_scope(factory) as s:
        report = get_report(session=s, job_id=job_id)
        assert (report.job.state, report.job.done, report.job.failed) == ("done", 2, 1)
        assert [i.attempts for i in report.items] == [1, 1, 1]
        assert "corrupt PDF" in (s.get(Document, ids[1]).error or "")

    # The same message again (a redelivery): every item is finished, nothing is redone.
    again = app.tasks[PARSE_DOCUMENT].apply(args=[ids, job_id])
    assert again.successful() and again.result == 0
    with session_scope(factory) as s:
        report = get_report(session=s, job_id=job_id)
        assert [i.attempts for i in report.items] == [1, 1, 1]
        assert (report.job.done, report.job.failed) == (2, 1)


def test_a_cancelled_jobs_batch_is_dropped_in_one_query(setup):
    settings, factory, app = setup
    names = ["guide.md", "latin1.txt", "config.json", "page.html", "tramontane.rtf",
             "winds-utf16.csv"]
    job_id, ids = _job(factory, names)
    with session_scope(factory) as s:
        assert cancel_job(session=s, job_id=job_id) == len(names)
    app.tasks[PARSE_DOCUMENT].apply(args=[ids[:1], job_id])  # the worker's engine, opened
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        result = app.tasks[PARSE_DOCUMENT].apply(args=[ids, job_id])
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert result.successful() and result.result == 0
    # The job's state, once for the batch, not one claim per document.
    assert len([s for s in statements if "job" in s.lower()]) == 1, statements
    assert _statuses(factory, ids) == ["cancelled"] * len(names)
    with session_scope(factory) as s:
        report = get_report(session=s, job_id=job_id)
        assert [i.attempts for i in report.items] == [0] * len(names)
        assert (report.job.state, report.job.cancelled) == ("cancelled", len(names))


def test_a_message_of_one_document_id_still_works(setup):
    """Messages queued before batching name one document, not a list."""
    settings, factory, app = setup
    job_id, (doc_id,) = _job(factory, ["guide.md"])
    result = app.tasks[PARSE_DOCUMENT].apply(args=[doc_id, job_id])
    assert result.successful() and result.result > 0
    assert _statuses(factory, [doc_id]) == ["done"]
