"""Ingestion jobs: a sync, a ``sirocco ingest`` run or an upload, item by item.

Lifecycle (see ``ingest.models.Job``): the caller creates a job and its items
in the transaction that registers the documents, commits, then enqueues the
items' documents with the job id. The parse claims each item with
``start_item_in`` (which refuses a cancelled item) in the transaction that
starts it, and the stages finish items with ``finish_item_in`` /
``finish_items_in``. Every count change is one SQL ``UPDATE ... SET n = n + k``
guarded by the items' state transition in the same transaction, so concurrent
workers never lose or double an update, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, select, update
from sqlalchemy.orm import Session, sessionmaker

from ingest.models import Document, Job, JobItem
from sirocco.db import rows_changed, session_scope, utcnow
from sirocco.errors import InvalidInputError, NotFoundError

logger = logging.getLogger(__name__)

JOB_KINDS = ("sync", "ingest", "upload", "rebuild")
ACTIVE = ("queued", "running")
#: Item end state -> the job counter it increments.
_COUNTER = {"done": Job.done, "failed": Job.failed, "skipped": Job.skipped,
            "cancelled": Job.cancelled}


@dataclass(frozen=True, slots=True)
class JobReport:
    """A job and its items, as ``GET /api/jobs/{id}`` and the CLI show them."""

    job: Job
    items: list[JobItem]

    @property
    def finished(self) -> int:
        j = self.job
        return j.done + j.failed + j.skipped + j.cancelled

    @property
    def progress(self) -> float:
        """Finished share of the items, 0.0 to 1.0 (1.0 for an empty job)."""
        return 1.0 if self.job.total == 0 else min(1.0, self.finished / self.job.total)


def create_job(
    *, session: Session, tenant: str, kind: str, source_id: str | None = None,
    created_by: str | None = None,
) -> Job:
    """A new queued job (flushed, not committed); ``created_by``: the user whose
    upload it is. Raises ``InvalidInputError`` for an unknown kind."""
    if kind not in JOB_KINDS:
        raise InvalidInputError(f"unknown job kind {kind!r}; expected one of {JOB_KINDS}")
    job = Job(tenant=tenant, kind=kind, source_id=source_id, state="queued",
              created_by=created_by,
              total=0, done=0, failed=0, skipped=0, cancelled=0, removed=0)
    session.add(job)
    session.flush()
    return job


def add_items(
    job: Job, docs: Iterable[Document], *, session: Session, state: str = "queued",
    error: str | None = None,
) -> None:
    """Add one item per document to a job that is not committed yet; ``state``
    "skipped" counts them as finished already."""
    for doc in docs:
        session.add(JobItem(job_id=job.id, document_id=doc.id, path=doc.source_path,
                            state=state, error=error, attempts=0))
        job.total += 1
        if state == "skipped":
            job.skipped += 1
    session.flush()


def add_skipped_paths(job: Job, skipped: Iterable[Any], *, session: Session) -> None:
    """Record files a walk left out (``ingest.service.Skipped``) as finished,
    skipped items with their reason: per-file errors without a document."""
    for item in skipped:
        path = str(item.path)
        # No document: a stable id of the path keeps (job, document) unique.
        pseudo = "path:" + hashlib.sha256(path.encode()).hexdigest()[:31]
        session.add(JobItem(job_id=job.id, document_id=pseudo, path=path, state="skipped",
                            error=item.reason, attempts=0))
        job.total += 1
        job.skipped += 1
    session.flush()


def queued_document_ids(*, session: Session, job_id: str) -> list[str]:
    """Ids of the job's documents waiting to be enqueued (items in state queued)."""
    stmt = select(JobItem.document_id).where(JobItem.job_id == job_id,
                                             JobItem.state == "queued")
    return list(session.scalars(stmt.order_by(JobItem.id)))


def finish_if_complete(*, session: Session, job_id: str) -> None:
    """End the job when every item has finished: "failed" if nothing succeeded
    and something failed, else "done"; a cancelled job keeps its state and only
    gets ``finished_at``. Safe to call repeatedly and concurrently."""
    complete = (Job.done + Job.failed + Job.skipped + Job.cancelled) >= Job.total
    final = case((and_(Job.done == 0, Job.failed > 0), "failed"), else_="done")
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_(ACTIVE), complete)
        .values(state=final, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.finished_at.is_(None), complete)
        .values(finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def job_cancelled(job_id: str, *, session_factory: sessionmaker[Session]) -> bool:
    """Whether the job was cancelled: its queued work is to be dropped (one
    query for a whole batch of its messages)."""
    with session_scope(session_factory) as session:
        return session.scalar(select(Job.state).where(Job.id == job_id)) == "cancelled"


def start_item(job_id: str, doc_id: str, *, session_factory: sessionmaker[Session]) -> bool:
    """``start_item_in`` in a transaction of its own."""
    with session_scope(session_factory) as session:
        return start_item_in(session, job_id, doc_id)


def start_item_in(session: Session, job_id: str, doc_id: str) -> bool:
    """Mark the item running (a redelivered or retried one may be running
    already) and the job running, in the caller's transaction; False when the
    item is no longer to be done (cancelled, finished, or unknown): the task
    must then skip the document."""
    claimed = rows_changed(session,
        update(JobItem)
        .where(JobItem.job_id == job_id, JobItem.document_id == doc_id,
               JobItem.state.in_(ACTIVE))
        .values(state="running", attempts=JobItem.attempts + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if claimed:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "queued")
            .values(state="running", started_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    else:
        logger.info("job item not active, skipped", extra={"job_id": job_id, "doc_id": doc_id})
    return bool(claimed)


def finish_item(
    job_id: str, doc_id: str, *, session_factory: sessionmaker[Session], state: str,
    error: str | None = None,
) -> None:
    """``finish_item_in`` in a transaction of its own."""
    with session_scope(session_factory) as session:
        finish_item_in(session, job_id, doc_id, state=state, error=error)


def finish_item_in(
    session: Session, job_id: str, doc_id: str, *, state: str, error: str | None = None
) -> None:
    """Move a running item to ``state`` ("done" | "failed") with ``error`` and
    count it on the job, in the caller's transaction; a no-op for an item that
    is not running (finished twice after a redelivery)."""
    finish_items_in(session, job_id, [doc_id], state=state, error=error)


def finish_items_in(
    session: Session, job_id: str, doc_ids: Sequence[str], *, state: str,
    error: str | None = None,
) -> int:
    """``finish_item_in`` for several documents of one job in three
    statements (an embed batch finishes hundreds); returns the items moved."""
    if not doc_ids:
        return 0
    counter = _COUNTER[state]
    moved = rows_changed(session,
        update(JobItem)
        .where(JobItem.job_id == job_id, JobItem.document_id.in_(list(doc_ids)),
               JobItem.state == "running")
        .values(state=state, error=error, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if moved:
        session.execute(
            update(Job).where(Job.id == job_id).values({counter.key: counter + moved})
            .execution_options(synchronize_session=False)
        )
        finish_if_complete(session=session, job_id=job_id)
    return moved


def finish_from_document(
    job_id: str, doc_id: str, *, session_factory: sessionmaker[Session]
) -> None:
    """Finish the item with its document's outcome: "done", or "failed" with the
    document's error (a deleted document counts as failed)."""
    with session_scope(session_factory) as session:
        doc = session.get(Document, doc_id)
        status, error = (doc.status, doc.error) if doc else ("failed", "document deleted")
    state = "done" if status == "done" else "failed"
    finish_item(job_id, doc_id, session_factory=session_factory, state=state,
                error=None if state == "done" else error or f"ended in status {status!r}")


def get_report(*, session: Session, job_id: str,
               states: Sequence[str] | None = None) -> JobReport:
    """The job and its items in insertion order, only those in ``states`` when
    given (none, and no query for them, when ``states`` is empty);
    ``NotFoundError`` if unknown."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found")
    if states is not None and not states:
        return JobReport(job=job, items=[])
    stmt = select(JobItem).where(JobItem.job_id == job_id)
    if states is not None:
        stmt = stmt.where(JobItem.state.in_(list(states)))
    items = session.scalars(stmt.order_by(JobItem.id)).all()
    return JobReport(job=job, items=list(items))


def get_job(*, session: Session, job_id: str) -> JobReport:
    """The job without its items: its counters, all that progress needs (one
    row, where ``get_report`` reads every item); ``NotFoundError`` if unknown."""
    return get_report(session=session, job_id=job_id, states=())


def list_jobs(
    *, session: Session, tenant: str, state: str | None = None, limit: int = 50
) -> list[JobReport]:
    """The tenant's jobs, newest first, without their items (``get_report``
    has them). ``state`` filters; ``InvalidInputError`` for an unknown one."""
    states = (*ACTIVE, "done", "failed", "cancelled")
    if state is not None and state not in states:
        raise InvalidInputError(f"unknown job state {state!r}; expected one of {states}")
    stmt = select(Job).where(Job.tenant == tenant)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    jobs = session.scalars(stmt.order_by(Job.created_at.desc(), Job.id).limit(limit))
    return [JobReport(job=j, items=[]) for j in jobs]


def cancel_job(*, session: Session, job_id: str) -> int:
    """Cancel the job's queued items (their tasks will skip them) and mark the
    job cancelled; running items still finish. Returns how many were cancelled.
    ``NotFoundError`` if unknown; a finished job is left as it is (returns 0)."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found")
    if job.state not in ACTIVE:
        return 0
    doc_ids = queued_document_ids(session=session, job_id=job_id)
    n = rows_changed(session,
        update(JobItem)
        .where(JobItem.job_id == job_id, JobItem.state == "queued")
        .values(state="cancelled", updated_at=utcnow())
    )
    session.execute(
        update(Document)
        .where(Document.id.in_(doc_ids), Document.status == "queued")
        .values(status="cancelled", updated_at=utcnow())
    )
    session.execute(
        update(Job).where(Job.id == job_id)
        .values(cancelled=Job.cancelled + n, state="cancelled")
    )
    finish_if_complete(session=session, job_id=job_id)
    session.expire(job)
    logger.info("job cancelled", extra={"job_id": job_id, "items": n})
    return n


def cancel_items_of(doc_ids: Iterable[str], *, session: Session, error: str) -> None:
    """Cancel the unfinished (queued or running) items of these documents in
    every job, counting them on their jobs (which may finish because of it).
    For documents being deleted: a task still working on one finds its item
    no longer running and counts nothing."""
    ids = list(doc_ids)
    if not ids:
        return
    rows = session.execute(
        select(JobItem.id, JobItem.job_id)
        .where(JobItem.document_id.in_(ids), JobItem.state.in_(ACTIVE))
    ).all()
    for item_id, job_id in rows:
        moved = rows_changed(session,
            update(JobItem).where(JobItem.id == item_id, JobItem.state.in_(ACTIVE))
            .values(state="cancelled", error=error, updated_at=utcnow())
        )
        if moved:
            session.execute(update(Job).where(Job.id == job_id)
                            .values(cancelled=Job.cancelled + 1))
            finish_if_complete(session=session, job_id=job_id)


def retry_failed(*, session: Session, job_id: str) -> list[str]:
    """Put the job's failed items back in the queue (documents re-queued, their
    attempts reset) and reopen the job; returns the document ids to enqueue
    after the commit. ``NotFoundError`` if unknown."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found")
    doc_ids = list(session.scalars(
        select(JobItem.document_id).where(JobItem.job_id == job_id, JobItem.state == "failed")
    ))
    # Items whose document was deleted since cannot be retried: drop them.
    alive = set(session.scalars(select(Document.id).where(Document.id.in_(doc_ids))))
    doc_ids = [d for d in doc_ids if d in alive]
    if not doc_ids:
        return []
    n = rows_changed(session,
        update(JobItem)
        .where(JobItem.job_id == job_id, JobItem.document_id.in_(doc_ids),
               JobItem.state == "failed")
        .values(state="queued", error=None, updated_at=utcnow())
    )
    session.execute(
        update(Document).where(Document.id.in_(doc_ids))
        .values(status="queued", error=None, attempts=0, updated_at=utcnow())
    )
    session.execute(
        update(Job).where(Job.id == job_id)
        .values(failed=Job.failed - n, state="running", finished_at=None)
    )
    session.expire(job)
    logger.info("retrying failed items", extra={"job_id": job_id, "items": n})
    return doc_ids
