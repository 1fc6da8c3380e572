"""Celery tasks: thin wrappers that re-fetch by id and call the services.

Heavy resources (embedding model, store, SQL engine) are built once per worker
process, on its first task, so a prefork parent never imports torch.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as DatabaseDown
from sqlalchemy.orm import Session, sessionmaker

from ingest.embedder import Embedder, create_embedder
from ingest.jobs import finish_from_document, finish_item, start_item
from ingest.service import ingest_document, mark_document
from retrieval.store import Store, create_store
from sirocco.db import make_engine, make_session_factory
from sirocco.errors import NotFoundError, UnavailableError
from sirocco.settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

INGEST_DOCUMENT = "sirocco.ingest.document"
#: Retry delays for transient errors: 10 s, 20 s, 40 s ... (full jitter), at most 10 min.
RETRY_BACKOFF_S = 10
RETRY_BACKOFF_MAX_S = 600


@dataclass(slots=True)
class Resources:
    pid: int
    embedder: Embedder
    store: Store
    session_factory: sessionmaker[Session]


_resources: dict[str, Resources] = {}
_resources_lock = threading.Lock()


def worker_resources(settings: Settings) -> Resources:
    """This process's embedder, store and session factory for ``settings``, built
    on first use. Never shared across a fork: a child builds its own."""
    key = settings.model_dump_json()
    with _resources_lock:
        res = _resources.get(key)
        if res is None or res.pid != os.getpid():
            res = Resources(
                pid=os.getpid(),
                embedder=create_embedder(settings),
                store=create_store(settings),
                session_factory=make_session_factory(make_engine(settings)),
            )
            _resources[key] = res
        return res


def ingest_document_task(self: Task, doc_id: str, job_id: str | None = None) -> int:
    """Ingest one document; transient failures retry with exponential backoff.

    With ``job_id`` the job's item is claimed first (a cancelled item is skipped)
    and its final state and error are counted on the job.
    """
    settings: Settings = getattr(self.app, "settings", None) or get_settings()
    res = worker_resources(settings)
    if job_id is not None and not start_item(job_id, doc_id, session_factory=res.session_factory):
        return 0

    def mark(status: str, error: str) -> None:
        try:
            mark_document(doc_id, session_factory=res.session_factory, status=status, error=error)
            if job_id is not None and status == "failed":
                finish_item(job_id, doc_id, session_factory=res.session_factory,
                            state="failed", error=error)
        except Exception:  # the database may be what failed; the log keeps the reason
            logger.exception("could not record document status", extra={"doc_id": doc_id})

    try:
        chunks = ingest_document(
            doc_id,
            session_factory=res.session_factory,
            embedder=res.embedder,
            store=res.store,
            settings=settings,
        )
        if job_id is not None:
            finish_from_document(job_id, doc_id, session_factory=res.session_factory)
        return chunks
    except NotFoundError as exc:
        logger.warning("document vanished, nothing to do", extra={"doc_id": doc_id})
        logger.debug(exc.message)
        if job_id is not None:
            finish_item(job_id, doc_id, session_factory=res.session_factory, state="failed",
                        error="the document was deleted before it was ingested")
        return 0
    except (UnavailableError, DatabaseDown) as exc:
        reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        max_retries = settings.celery.max_retries
        if self.request.retries >= max_retries:
            mark("failed", f"gave up after {self.request.retries + 1} attempts: {reason}")
            raise
        mark("queued", f"will retry: {reason}")
        countdown = get_exponential_backoff_interval(
            factor=RETRY_BACKOFF_S,
            retries=self.request.retries,
            maximum=RETRY_BACKOFF_MAX_S,
            full_jitter=True,
        )
        logger.warning(
            "transient failure, retrying",
            extra={"doc_id": doc_id, "countdown": countdown, "reason": reason},
        )
        raise self.retry(exc=exc, countdown=countdown, max_retries=max_retries) from exc
    except SoftTimeLimitExceeded:
        mark(
            "failed",
            f"took longer than {settings.celery.task_soft_time_limit_s}s "
            "(SIROCCO_CELERY__TASK_SOFT_TIME_LIMIT_S)",
        )
        raise
    except Exception as exc:
        mark("failed", f"internal error: {type(exc).__name__}: {exc}")
        raise


def register_tasks(app: Celery) -> None:
    """Register Sirocco's tasks on ``app`` (called by ``create_celery``)."""
    app.task(name=INGEST_DOCUMENT, bind=True, ignore_result=True)(ingest_document_task)


def enqueue_documents(
    celery_app: Celery,
    doc_ids: Iterable[str],
    *,
    queue: str | None = None,
    job_id: str | None = None,
) -> list[str]:
    """Send one ingestion task per document id (as items of ``job_id`` if
    given); returns the task ids.

    Call it after the transaction that created the rows has committed, or the
    worker may not find them. Raises ``UnavailableError`` when the broker is down.
    """
    ids: list[str] = []
    try:
        with celery_app.producer_or_acquire() as producer:
            for doc_id in doc_ids:
                options: dict[str, Any] = {"producer": producer}
                if queue:
                    options["queue"] = queue
                args = [doc_id] if job_id is None else [doc_id, job_id]
                ids.append(celery_app.send_task(INGEST_DOCUMENT, args=args, **options).id)
    except (BrokerError, OSError) as exc:
        raise UnavailableError(
            f"the task queue is unreachable ({exc}); {len(ids)} document(s) were queued"
        ) from exc
    return ids
