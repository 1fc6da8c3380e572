"""No head-of-line blocking, on the embedded broker and on Redis, with the
workers ``sirocco up`` runs (one per stage: parse, embed, exports).

A large ingestion job (many small files) is running when a trace export is
asked for: the export has a queue and a worker of its own, so it finishes
within a bound however much ingestion waits. Then the job is cancelled: its
queued batches are dropped with one query each, so the parse queue drains at
once and the job finishes (its running items end, nothing else is parsed).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

import ingest.models  # noqa: F401  (tables on Base)
import traces.models  # noqa: F401
from ingest.jobs import add_items, cancel_job, create_job, get_report
from ingest.models import Document
from ingest.service import register_files
from sirocco.db import session_scope
from tests.integration.workerutil import (
    REDIS_URL,
    database_url,
    redis_or_skip,
    start_worker,
    stop_worker,
    worker_stack,
)
from traces.export import ExportOptions, ExportRequest
from traces.export.jobs import create_export
from traces.models import ExportJob
from workers.app import create_celery
from workers.export_tasks import enqueue_export
from workers.recovery import message_tasks, sql_pending
from workers.tasks import enqueue_documents, queue_names

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

N_DOCS = 2000
#: Generous: an export of no traces takes well under a second once its worker is up.
EXPORT_BOUND_S = 60.0
#: From the cancel to an empty parse queue (the cancelled batches cost a query each).
DRAIN_BOUND_S = 15.0
#: Then to the job's end: items parsed before the cancel are still embedded.
FINISH_BOUND_S = 300.0


def _write_notes(root: Path) -> None:
    root.mkdir()
    for i in range(N_DOCS):
        (root / f"note-{i:04d}.md").write_text(
            f"# Note {i}\n\nStation {i} logged {i * 7 % 97} knots on day {i % 28 + 1}; "
            f"code QS-{i:05d}.\n")


def _waiting_parse(settings, broker: str) -> int:
    """Documents whose parse message waits in the queue (not the one a worker
    holds: Redis's unacked set is shared by every queue of the database)."""
    queue = queue_names(settings)["parse"]
    if broker == "redis":
        import redis

        raws = redis.Redis.from_url(REDIS_URL).lrange(queue, 0, -1)
        return sum(len(message_tasks(raw)) for raw in raws)
    found = sql_pending(settings.broker_url, [queue])
    assert found is not None
    return len(found)


def _export_status(factory, export_id: str) -> str:
    with session_scope(factory) as s:
        job = s.get(ExportJob, export_id)
        assert job is not None
        return job.status


@pytest.mark.parametrize("broker", ["embedded", "redis"])
def test_an_export_does_not_wait_for_ingestion_and_a_cancel_drains_the_queue(
    tmp_path: Path, request: pytest.FixtureRequest, broker: str
):
    if broker == "redis":
        redis_or_skip()
    st = worker_stack(tmp_path, database_url(tmp_path, request), name="hol",
                      redis=broker == "redis")
    settings, factory = st.settings, st.factory
    _write_notes(tmp_path / "docs")
    with session_scope(factory) as s:
        docs = register_files([tmp_path / "docs"], session=s)
        job = create_job(session=s, tenant="default", kind="ingest")
        add_items(job, docs, session=s)
        job_id, ids = job.id, [d.id for d in docs]
    assert len(ids) == N_DOCS
    app = create_celery(settings)
    enqueue_documents(app, ids, job_id=job_id)

    log = tmp_path / "worker.log"
    workers = [start_worker(st.env, st.prefix, log, [stage])
               for stage in ("parse", "embed", "exports")]
    try:
        deadline = time.monotonic() + 300
        while _report(factory, job_id).job.done == 0:  # the ingestion is under way
            assert all(w.poll() is None for w in workers), log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)

        with session_scope(factory) as s:
            export_id = create_export(session=s, tenant="default", request=ExportRequest(
                format="openai", options=ExportOptions(validation_fraction=0.0))).id
        asked = time.monotonic()
        enqueue_export(app, export_id)
        while _export_status(factory, export_id) in ("queued", "running"):
            assert time.monotonic() - asked < EXPORT_BOUND_S, (
                f"export still {_export_status(factory, export_id)} after {EXPORT_BOUND_S}s\n"
                + log.read_text()[-3000:])
            time.sleep(0.2)
        export_s = time.monotonic() - asked
        assert _export_status(factory, export_id) == "done", log.read_text()[-3000:]
        report = _report(factory, job_id)
        # It overtook the ingestion: the job was still far from done.
        assert report.job.finished_at is None and report.job.done < N_DOCS, report.job.done

        with session_scope(factory) as s:
            cancelled = cancel_job(session=s, job_id=job_id)
        assert cancelled > 0 and _waiting_parse(settings, broker) > 0
        cancelled_at = time.monotonic()
        while left := _waiting_parse(settings, broker):
            assert time.monotonic() - cancelled_at < DRAIN_BOUND_S, (
                f"{left} document(s) still in the parse queue\n" + log.read_text()[-3000:])
            time.sleep(0.1)
        drain_s = time.monotonic() - cancelled_at
        while _report(factory, job_id).job.finished_at is None:
            assert time.monotonic() - cancelled_at < FINISH_BOUND_S, log.read_text()[-3000:]
            time.sleep(0.5)
        finish_s = time.monotonic() - cancelled_at
    finally:
        for w in workers:
            stop_worker(w)

    j = _report(factory, job_id).job
    assert j.state == "cancelled" and j.cancelled == cancelled
    assert j.done + j.failed + j.cancelled == N_DOCS
    with session_scope(factory) as s:
        statuses = dict(s.execute(select(Document.status, func.count())
                                  .group_by(Document.status)).all())
    assert statuses.get("cancelled") == cancelled  # never parsed after the cancel
    print(f"{broker}: export {export_s:.1f}s during ingestion; after the cancel "
          f"({cancelled} items) parse queue empty in {drain_s:.1f}s, job finished in "
          f"{finish_s:.1f}s")
    st.close()


def _report(factory, job_id: str):
    with session_scope(factory) as s:
        return get_report(session=s, job_id=job_id)
