"""Lost ingestion messages are sent again (``workers.recovery``): real Redis or
the embedded SQL broker, SQL (SQLite or the PostgreSQL schema of
SIROCCO_TEST_DATABASE_URL), and for the end-to-end case a real worker and
local Qdrant.

A message is lost when a worker dies between kombu's ``BRPOP`` and its unacked
record, or never sent when the broker was down while a job was enqueued: both
leave a job item queued (or a parsed document) with no message anywhere.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from ingest.embedding.tokenizer import load_chunk_tokenizer
from ingest.jobs import add_items, create_job, get_report, start_item
from ingest.models import Document
from ingest.pipeline import parse_document
from ingest.service import register_files
from retrieval.factory import create_store
from sirocco.db import session_scope
from sirocco.settings import Settings
from tests.integration.workerutil import (
    REDIS_URL,
    database_url,
    redis_or_skip,
    start_worker,
    stop_worker,
    worker_stack,
)
from workers.app import create_celery
from workers.recovery import UNACKED_KEY, RecoveryStep, message_tasks, recover_lost
from workers.tasks import EMBED_DOCUMENT, PARSE_DOCUMENT, enqueue_documents, queue_names

pytestmark = pytest.mark.integration


def _notes(root: Path, n: int) -> list[Path]:
    root.mkdir()
    paths = []
    for i in range(n):
        p = root / f"note-{i}.md"
        p.write_text(f"# Note {i}\n\nThe relay at site {i} restarts every {i + 2} hours.\n")
        paths.append(p)
    return paths


def _register_job(factory, root: Path) -> tuple[str, list[str]]:
    with session_scope(factory) as s:
        docs = sorted(register_files([root], session=s), key=lambda d: d.source_path)
        job = create_job(session=s, tenant="default", kind="ingest")
        add_items(job, docs, session=s)
        return job.id, [d.id for d in docs]


def _queued(client: redis.Redis, queue: str) -> list[tuple[str, str]]:
    return sorted(t for raw in client.lrange(queue, 0, -1) for t in message_tasks(raw))


def _with(settings: Settings, **celery: int) -> Settings:
    return settings.model_copy(update={"celery": settings.celery.model_copy(update=celery)})


def test_sweep_sends_only_the_missing_messages(tmp_path: Path, request: pytest.FixtureRequest):
    redis_or_skip()
    st = worker_stack(tmp_path, database_url(tmp_path, request), name="recover")
    try:
        # One document a message, so each can be held or lost on its own.
        settings = _with(st.settings, recover_after_s=0, parse_batch_docs=1)
        app, client = create_celery(settings), redis.Redis.from_url(REDIS_URL)
        q = queue_names(settings)
        _notes(tmp_path / "docs", 4)
        job_id, ids = _register_job(st.factory, tmp_path / "docs")
        # ids[0], ids[1]: sent. ids[2]: parsed, its embed message lost. ids[3]: lost.
        enqueue_documents(app, ids[:2], job_id=job_id)
        assert start_item(job_id, ids[2], session_factory=st.factory)
        assert parse_document(ids[2], session_factory=st.factory,
                              tokenizer=load_chunk_tokenizer(settings), settings=settings,
                              job_id=job_id) == 1
        time.sleep(0.05)  # strictly older than "now - 0"

        out = recover_lost(settings, session_factory=st.factory, celery_app=app, client=client)
        assert (out.parse, out.embed, out.skipped) == ([(job_id, ids[3])], [ids[2]], None)
        assert _queued(client, q["parse"]) == sorted((PARSE_DOCUMENT, i) for i in
                                                     (ids[0], ids[1], ids[3]))
        assert _queued(client, q["embed"]) == [(EMBED_DOCUMENT, ids[2])]

        # Every document has its message now: nothing is sent twice.
        out = recover_lost(settings, session_factory=st.factory, celery_app=app, client=client)
        assert (out.parse, out.embed) == ([], [])

        # A message a live worker holds unacked counts as present too.
        with app.connection_for_read() as conn:
            held = conn.default_channel.basic_get(queue=q["parse"], no_ack=False)
            assert held is not None and client.hlen(UNACKED_KEY) >= 1
            assert len(_queued(client, q["parse"])) == 2
            out = recover_lost(settings, session_factory=st.factory, celery_app=app,
                               client=client)
            assert (out.parse, out.embed) == ([], [])
            held.requeue()
        assert len(_queued(client, q["parse"])) == 3

        # Not yet stale: left alone, whatever the broker holds.
        client.delete(q["parse"])
        out = recover_lost(_with(settings, recover_after_s=3600), session_factory=st.factory,
                           celery_app=app, client=client)
        assert (out.parse, out.embed) == ([], [])

        # A worker's sweep (the parse queue was just emptied); workers share one
        # sweep per interval, so the second in it does nothing.
        every_30s = create_celery(_with(settings, recover_interval_s=30))
        out = RecoveryStep(None).sweep(every_30s)
        assert out is not None and sorted(out.parse) == sorted(
            (job_id, i) for i in (ids[0], ids[1], ids[3]))
        assert RecoveryStep(None).sweep(every_30s) is None
    finally:
        st.close()


@pytest.mark.parametrize("broker", ["redis", "embedded"])
def test_a_worker_finishes_a_job_whose_messages_were_never_sent(
    tmp_path: Path, request: pytest.FixtureRequest, broker: str
):
    """As after ``enqueue_documents`` failed on a broker that was down: the job
    and its items exist, no message does; a worker's sweep sends them."""
    if broker == "redis":
        redis_or_skip()
    st = worker_stack(tmp_path, database_url(tmp_path, request), name="recover-e2e",
                      redis=broker == "redis", worker_env={"SIROCCO_CELERY__RECOVER_AFTER_S": "1",
                                  "SIROCCO_CELERY__RECOVER_INTERVAL_S": "2"})
    _notes(tmp_path / "docs", 3)
    job_id, ids = _register_job(st.factory, tmp_path / "docs")
    log = tmp_path / "worker.log"
    worker = start_worker(st.env, st.prefix, log)
    try:
        deadline = time.monotonic() + 300
        while True:
            with session_scope(st.factory) as s:
                report = get_report(session=s, job_id=job_id)
                if report.job.finished_at is not None:
                    break
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        stop_worker(worker)
    j = report.job
    assert (j.state, j.total, j.done, j.failed) == ("done", 3, 3, 0)
    with session_scope(st.factory) as s:
        assert {s.get(Document, i).status for i in ids} == {"done"}
    assert create_store(st.settings).count() == 3
    assert "sent lost ingestion messages again" in log.read_text()
    st.close()
