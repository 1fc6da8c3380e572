"""Zero-downtime rebuild: documents are indexed, then re-ingested into a new
collection with another chunk size by a real worker while this process keeps
searching; the alias swaps when the job is done. No query fails or comes back
empty, and afterwards the live collection is the rebuilt one."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import ingest.models  # noqa: F401
from ingest.jobs import add_items, create_job, get_report
from ingest.rebuild import start_rebuild
from ingest.service import register_files
from retrieval.factory import create_store
from sirocco.db import session_scope
from tests.integration.workerutil import (
    redis_or_skip,
    start_worker,
    stop_worker,
    worker_stack,
)
from workers.app import create_celery
from workers.tasks import enqueue_documents

pytestmark = pytest.mark.integration
N_DOCS = 24


def _wait_job(factory, job_id: str, proc, log: Path, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(factory) as s:
            report = get_report(session=s, job_id=job_id)
        if report.job.finished_at is not None:
            return report
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)


def test_rebuild_swaps_the_alias_while_queries_keep_working(tmp_path: Path):
    redis_or_skip()
    st = worker_stack(tmp_path, f"sqlite:///{tmp_path / 's.db'}", name="rebuild")
    settings, env, prefix, factory = st.settings, st.env, st.prefix, st.factory
    alias = settings.qdrant.collection
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(N_DOCS):
        (folder / f"wind-{i}.md").write_text(
            f"# Station {i}\n\n" + " ".join(
                f"Station {i} logged gusts of {i + k} knots from the north-west on day {k}."
                for k in range(12)))
    with session_scope(factory) as s:
        docs = register_files([folder], session=s)
        job = create_job(session=s, tenant="default", kind="ingest")
        add_items(job, docs, session=s)
        first_job = job.id
    app = create_celery(settings)
    enqueue_documents(app, [d.id for d in docs], job_id=first_job)
    log = tmp_path / "worker.log"
    worker = start_worker(env, prefix, log)
    store = create_store(settings)
    try:
        assert _wait_job(factory, first_job, worker, log).job.done == N_DOCS
        before = store.index_status()
        assert before["live"] == f"{alias}__1" and before["building"] is None
        stop_worker(worker)

        # Smaller chunks this time: the rebuilt index has more points.
        worker = start_worker({**env, "SIROCCO_CHUNKING__CHUNK_TOKENS": "60",
                               "SIROCCO_CHUNKING__OVERLAP_TOKENS": "10"}, prefix, log)
        results: list[int] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def query() -> None:
            from ingest.embedding.base import create_embedder

            embedder = create_embedder(settings)
            vector = embedder.embed_query("north-west gusts at station 7")
            while not stop.is_set():
                try:
                    results.append(len(store.search(vector, top_k=5,
                                                    text="north-west gusts station 7")))
                except BaseException as exc:  # every failure counts
                    errors.append(exc)
                time.sleep(0.05)

        searcher = threading.Thread(target=query)
        searcher.start()
        try:
            # Querying before the rebuild starts (the embedder loads first):
            # batched ingestion may otherwise finish the rebuild before a query.
            deadline = time.monotonic() + 120
            while not results and not errors and time.monotonic() < deadline:
                time.sleep(0.1)
            with session_scope(factory) as s:
                job, ids = start_rebuild(session=s, store=store, dim=384)
                rebuild_job = job.id
            assert store.index_status()["building"] == f"{alias}__2"
            enqueue_documents(app, ids, job_id=rebuild_job)
            report = _wait_job(factory, rebuild_job, worker, log)
            during = len(results)
            # More queries against the swapped alias (batched ingestion may
            # finish the rebuild before many ran on a busy machine).
            deadline = time.monotonic() + 60
            while len(results) < during + 20 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop.set()
            searcher.join(30)
    finally:
        stop_worker(worker)
        st.close()
    assert (report.job.kind, report.job.state, report.job.done) == ("rebuild", "done", N_DOCS)
    after = store.index_status()
    assert (after["live"], after["building"]) == (f"{alias}__2", None)
    assert after["live_points"] > before["live_points"]
    assert not errors, errors[:3]
    assert len(results) > 20 and min(results) == 5, results
