"""Durability: ``kill -9`` the worker in the middle of a 240-document job, on
Redis and on the embedded SQL broker, start a new one, and every document ends
indexed exactly once.

Why it holds: parse and embed tasks are acked late, so on Redis the killed
worker's in-flight message comes back after the (here short) visibility
timeout. What no broker gives back, the new worker's recovery sweep
(``workers.recovery``) sends again once its items are stale: the message a
worker had popped from Redis but not yet recorded as unacked, and everything
the embedded broker's dead worker had taken. A document claimed by the dead
worker's embed batch is taken over when its lease (= the task time limit) runs
out. Points have deterministic ids and job counters only move on an item's
state change, so nothing is counted or stored twice.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

import ingest.models  # noqa: F401
from ingest.jobs import add_items, create_job, get_report
from ingest.models import Document, StagedChunks
from ingest.service import register_files
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

N_DOCS = 240
#: Short, so the test does not wait an hour for the killed worker's message;
#: the time limit leaves room for a worker's first task (model loading) on a
#: busy machine.
VISIBILITY_S, TIME_LIMIT_S = 75, 60


def _write_corpus(root: Path) -> None:
    """N distinct one-chunk notes (distinct content: no duplicates)."""
    root.mkdir()
    for i in range(N_DOCS):
        (root / f"note-{i:03d}.md").write_text(
            f"# Note {i}\n\nWind station {i} logged a gust of {i * 7 % 97} knots "
            f"on day {i % 28 + 1}; reference code WS-{i:04d}.\n"
        )


def _job_counts(factory, job_id: str) -> tuple[int, int]:
    with session_scope(factory) as s:
        j = get_report(session=s, job_id=job_id).job
        return j.done, j.failed


@pytest.mark.parametrize("broker", ["redis", "embedded"])
def test_kill_9_mid_job_then_a_new_worker_finishes_it_exactly_once(
    tmp_path: Path, request: pytest.FixtureRequest, broker: str
):
    if broker == "redis":
        redis_or_skip()
    st = worker_stack(tmp_path, database_url(tmp_path, request), name="crash",
                      redis=broker == "redis", worker_env={
        "SIROCCO_CELERY__VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
        "SIROCCO_CELERY__TASK_TIME_LIMIT_S": str(TIME_LIMIT_S),
        "SIROCCO_CELERY__TASK_SOFT_TIME_LIMIT_S": str(TIME_LIMIT_S - 3),
        "SIROCCO_CELERY__RECOVER_AFTER_S": "20",
        "SIROCCO_CELERY__RECOVER_INTERVAL_S": "5",
    })
    settings, env, prefix, factory = st.settings, st.env, st.prefix, st.factory
    _write_corpus(tmp_path / "docs")
    with session_scope(factory) as s:
        docs = register_files([tmp_path / "docs"], session=s)
        job = create_job(session=s, tenant="default", kind="ingest")
        add_items(job, docs, session=s)
        job_id, ids = job.id, [d.id for d in docs]
    assert len(ids) == N_DOCS
    enqueue_documents(create_celery(settings), ids, job_id=job_id)

    log = tmp_path / "worker.log"
    first = start_worker(env, prefix, log)
    second = None
    try:
        deadline = time.monotonic() + 300
        while _job_counts(factory, job_id)[0] < N_DOCS // 4:
            assert first.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool child, mid-job
        first.wait(timeout=10)
        done_at_kill = _job_counts(factory, job_id)[0]
        assert done_at_kill < N_DOCS, "the job finished before the kill: make it longer"

        second = start_worker(env, prefix, log)
        deadline = time.monotonic() + 300
        while True:
            with session_scope(factory) as s:
                report = get_report(session=s, job_id=job_id)
                if report.job.finished_at is not None:
                    break
            assert second.poll() is None, log.read_text()[-3000:]
            if time.monotonic() > deadline:
                states = [i.state for i in report.items]
                pytest.fail(f"job not finished after the restart: "
                            f"{ {st: states.count(st) for st in set(states)} }\n"
                            f"{log.read_text()[-3000:]}")
            time.sleep(0.5)
    finally:
        for proc in (first, second):
            if proc is not None:
                stop_worker(proc)

    j = report.job
    assert (j.state, j.total, j.done, j.failed, j.cancelled) == ("done", N_DOCS, N_DOCS, 0, 0)
    assert {i.state for i in report.items} == {"done"}
    with session_scope(factory) as s:
        statuses = s.execute(select(Document.status, func.count()).group_by(Document.status))
        assert dict(statuses.all()) == {"done": N_DOCS}
        expected = s.scalar(select(func.sum(Document.chunk_count)))
        assert s.scalar(select(func.count()).select_from(StagedChunks)) == 0
    # Each note is one chunk; ids are deterministic, so equal counts mean each
    # document's chunks are stored once.
    assert expected == N_DOCS
    assert create_store(settings).count() == expected
    st.close()
