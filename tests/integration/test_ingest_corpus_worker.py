"""The 60 real mixed-format files of the shared corpus through a real worker
on Redis: each ends done or failed as MANIFEST.tsv predicts, with a clear
message; every indexed file has chunks, PDF chunks have pages, and a passage
of every indexed file finds that file again. Skipped when the corpus is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import ingest.models  # noqa: F401
from ingest.jobs import add_items, create_job, get_report
from ingest.service import register_files
from retrieval.factory import create_store
from sirocco.db import session_scope
from tests.corpus import DOCS, MANIFEST, expected_failure
from tests.integration.workerutil import (
    database_url,
    redis_or_skip,
    start_worker,
    stop_worker,
    wait_for,
    worker_stack,
)
from tests.support import optional
from workers.app import create_celery
from workers.tasks import enqueue_documents

pytestmark = pytest.mark.integration
if not MANIFEST:
    optional("the shared data", f"{DOCS} is absent")


def test_shared_corpus_through_a_worker(tmp_path: Path, request: pytest.FixtureRequest):
    redis_or_skip()
    from ingest.embedding.base import create_embedder

    st = worker_stack(tmp_path, database_url(tmp_path, request), name="corpus")
    settings, env, prefix, factory = st.settings, st.env, st.prefix, st.factory
    files = [DOCS / name for name in sorted(MANIFEST) if (DOCS / name).is_file()]
    with session_scope(factory) as s:
        docs = register_files(files, session=s)
        job = create_job(session=s, tenant="default", kind="ingest")
        add_items(job, [d for d in docs if d.status == "queued"], session=s)
        job_id = job.id
        queued = [d.id for d in docs if d.status == "queued"]
        duplicates = {d.id for d in docs if d.status == "duplicate"}
    enqueue_documents(create_celery(settings), queued, job_id=job_id)
    log = tmp_path / "worker.log"
    proc = start_worker(env, prefix, log)
    try:
        by_id = wait_for(factory, queued, proc, log, timeout=1500)
    finally:
        stop_worker(proc)

    store = create_store(settings)
    embedder = create_embedder(settings)
    wrong: list[str] = []
    for doc in by_id.values():
        name = Path(doc.source_path).name
        failure = expected_failure(name)
        if failure is not None:
            if doc.status != "failed" or not (doc.error or "").strip():
                wrong.append(f"{name}: expected to fail, got {doc.status}")
            continue
        if doc.status != "done" or doc.chunk_count < 1:
            wrong.append(f"{name}: {doc.status} {doc.error} ({doc.chunk_count} chunks)")
            continue
        # A passage of the file (its chunk nearest to its own title) finds the file.
        (own,) = store.search(embedder.embed_query(doc.title or name), top_k=1,
                              doc_ids=[doc.id])
        if name.endswith(".pdf") and not (own.page and own.page >= 1):
            wrong.append(f"{name}: PDF chunk without a page")
        hits = store.search(embedder.embed_query(own.text[:400]), top_k=5)
        if doc.id not in {h.doc_id for h in hits}:
            wrong.append(f"{name}: its passage {own.text[:60]!r} finds "
                         f"{[Path(h.source).name for h in hits]}")
    assert not wrong, "\n".join(wrong)
    assert store.count() == sum(d.chunk_count for d in by_id.values())
    with session_scope(factory) as s:
        j = get_report(session=s, job_id=job_id).job
        assert (j.state, j.done + j.failed, j.total) == ("done", len(queued), len(queued))
    assert not duplicates or all(d not in by_id for d in duplicates)
    st.close()
