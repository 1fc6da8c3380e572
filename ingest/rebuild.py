"""Rebuilding the index without downtime: after changing the embedding model,
chunking or BM25 analysis, every document is ingested again into a new
collection while searches keep using the live one; the alias then swaps
(``retrieval.collections``).

``start_rebuild`` creates the new collection and a "rebuild" job whose items
are every indexed document, re-queued; the caller commits and enqueues them
like any job. The embed task that finishes the job's last item calls
``finish_if_rebuilt``, which swaps when nothing failed (otherwise the build
stays for ``sirocco index swap`` or ``abandon``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ingest.jobs import add_items, create_job, finish_if_complete
from ingest.models import Document, Job
from retrieval.store import Store
from sirocco.db import session_scope

logger = logging.getLogger(__name__)

#: Rebuild jobs span every tenant.
ALL_TENANTS = "*"


def start_rebuild(*, session: Session, store: Store, dim: int) -> tuple[Job, list[str]]:
    """Begin a rebuild for ``dim``-dimensional vectors; returns the job and the
    document ids to enqueue after the commit."""
    store.begin_rebuild(dim)
    docs = list(session.scalars(
        select(Document).where(Document.status == "done").order_by(Document.created_at)))
    job = create_job(session=session, tenant=ALL_TENANTS, kind="rebuild")
    for doc in docs:
        doc.status, doc.attempts, doc.error = "queued", 0, None
    add_items(job, docs, session=session)
    finish_if_complete(session=session, job_id=job.id)  # nothing to do: done at once
    logger.info("rebuild queued", extra={"job_id": job.id, "documents": len(docs)})
    return job, [d.id for d in docs]


def finish_if_rebuilt(job_ids: Iterable[str], *, session_factory: sessionmaker[Session],
                      store: Store) -> str | None:
    """Swap the alias when one of ``job_ids`` is a rebuild that finished with
    every item done; returns the new live collection, else None."""
    with session_scope(session_factory) as session:
        ready = session.scalar(
            select(Job.id).where(Job.id.in_(list(job_ids)), Job.kind == "rebuild",
                                 Job.state == "done", Job.failed == 0,
                                 Job.finished_at.is_not(None)).limit(1))
    if ready is None:
        return None
    live = store.finish_rebuild()
    logger.info("rebuild finished", extra={"job_id": ready, "live": live})
    return live
