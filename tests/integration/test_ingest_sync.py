"""Source sync and jobs end to end: a real worker on Redis, SQL (SQLite or the
PostgreSQL schema of SIROCCO_TEST_DATABASE_URL), local Qdrant."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ingest.jobs import cancel_job, get_report
from ingest.models import Document
from ingest.sources import add_source, get_source, sync_source
from retrieval.factory import create_store
from sirocco.db import session_scope
from tests.integration.workerutil import (
    database_url,
    redis_or_skip,
    start_worker,
    stop_worker,
    worker_stack,
)
from workers.app import create_celery
from workers.tasks import enqueue_documents

pytestmark = pytest.mark.integration


@pytest.fixture()
def stack(tmp_path: Path, request: pytest.FixtureRequest):
    redis_or_skip()
    st = worker_stack(tmp_path, database_url(tmp_path, request), name="sync")
    yield st.settings, st.env, st.prefix, st.factory
    st.close()


def _sync(factory, store, settings, queue) -> str:
    with session_scope(factory) as s:
        plan = sync_source(get_source("docs", session=s), session=s, store=store)
        job_id, ids = plan.job.id, plan.to_enqueue
    enqueue_documents(create_celery(settings), ids, job_id=job_id)
    return job_id


def _wait_job(factory, job_id, proc, log, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        with factory() as s:
            r = get_report(session=s, job_id=job_id)
        if r.job.finished_at is not None:
            return r
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"job did not finish: {r.job.state}\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def _docs(factory) -> dict[str, Document]:
    with factory() as s:
        return {Path(d.source_path).name: d for d in s.query(Document).all()}


def test_sync_resync_failure_and_cancel(stack, tmp_path: Path) -> None:
    settings, env, queue, factory = stack
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"f{i}.md").write_text(f"# Note {i}\n\nThe code word {i} is zephyr-{i}.\n")
    with session_scope(factory) as s:
        add_source(folder, session=s)
    store = create_store(settings)
    log = tmp_path / "worker.log"
    proc = start_worker(env, queue, log)
    try:
        r = _wait_job(factory, _sync(factory, store, settings, queue), proc, log)
        assert (r.job.state, r.job.total, r.job.done) == ("done", 4, 4)
        before = _docs(factory)
        assert store.count() == sum(d.chunk_count for d in before.values())

        (folder / "f0.md").write_text("# Note 0\n\nChanged: the code word is mistral.\n")
        (folder / "f1.md").unlink()
        (folder / "f4.md").write_text("# Note 4\n\nA new file.\n")
        r = _wait_job(factory, _sync(factory, store, settings, queue), proc, log)
        assert (r.job.done, r.job.skipped, r.job.removed, r.job.failed) == (2, 2, 1, 0)
        assert sorted(Path(i.path).name for i in r.items) == ["f0.md", "f4.md"]
        after = _docs(factory)
        assert set(after) == {"f0.md", "f2.md", "f3.md", "f4.md"}
        for name in ("f2.md", "f3.md"):  # untouched
            assert after[name].updated_at == before[name].updated_at
        assert store.count(doc_id=before["f1.md"].id) == 0
        assert store.count() == sum(d.chunk_count for d in after.values())

        (folder / "bad.txt").write_text("")
        (folder / "f2.md").write_text("# Note 2\n\nEdited.\n")
        r = _wait_job(factory, _sync(factory, store, settings, queue), proc, log)
        assert (r.job.state, r.job.done, r.job.failed) == ("done", 1, 1)
        assert [i.error for i in r.items if i.state == "failed"][0].endswith("bad.txt is empty")
    finally:
        stop_worker(proc)

    # No worker: queue a sync, cancel it, then start the worker: nothing is ingested.
    (folder / "bad.txt").unlink()  # a failed file would be queued again
    for i in range(5, 8):
        (folder / f"f{i}.md").write_text(f"# Note {i}\n\nqueued {i}\n")
    job_id = _sync(factory, store, settings, queue)
    with session_scope(factory) as s:
        assert cancel_job(session=s, job_id=job_id) == 3
    proc = start_worker(env, queue, log)
    try:
        time.sleep(8)  # let the worker take and skip the three tasks
    finally:
        stop_worker(proc)
    with factory() as s:
        r = get_report(session=s, job_id=job_id)
    assert (r.job.state, r.job.cancelled, r.job.done) == ("cancelled", 3, 0)
    assert {i.state for i in r.items} == {"cancelled"}
    docs = _docs(factory)
    assert all(docs[f"f{i}.md"].chunk_count == 0 for i in range(5, 8))
    assert all(store.count(doc_id=docs[f"f{i}.md"].id) == 0 for i in range(5, 8))
    store.close()
