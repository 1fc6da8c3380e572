"""Celery tasks: thin wrappers that re-fetch by id and call ``ingest.pipeline``.

Two stages on two queues (``queue_names``): ``sirocco.ingest.parse`` parses
and chunks one document, then sends ``sirocco.ingest.embed``, which embeds it
together with other parsed documents. Heavy resources (embedding model,
tokenizer, store, SQL engine) are built once per worker process, on first use,
so a prefork parent never imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as DatabaseDown

from ingest.embed_stage import embed_staged
from ingest.jobs import finish_item, start_item
from ingest.pipeline import fail_documents, mark_document, parse_document
from sirocco.errors import NotFoundError, UnavailableError
from sirocco.settings import Settings, get_settings
from workers.resources import worker_resources

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

PARSE_DOCUMENT = "sirocco.ingest.parse"
EMBED_DOCUMENT = "sirocco.ingest.embed"
#: Retry delays for transient errors: 10 s, 20 s, 40 s ... (full jitter), at most 10 min.
RETRY_BACKOFF_S = 10
RETRY_BACKOFF_MAX_S = 600
#: An embed task whose document another task holds looks again this often.
LEASE_POLL_S = 15.0
TRANSIENT = (UnavailableError, DatabaseDown)


def queue_names(settings: Settings) -> dict[str, str]:
    """Stage ("parse" | "embed") -> its queue name."""
    prefix = settings.celery.queue_prefix
    return {"parse": f"{prefix}.parse", "embed": f"{prefix}.embed"}


def task_routes(settings: Settings) -> dict[str, dict[str, str]]:
    """Each task to its stage's queue."""
    q = queue_names(settings)
    return {PARSE_DOCUMENT: {"queue": q["parse"]}, EMBED_DOCUMENT: {"queue": q["embed"]}}


def _settings(task: Task) -> Settings:
    return getattr(task.app, "settings", None) or get_settings()


def _backoff(task: Task) -> float:
    return float(get_exponential_backoff_interval(
        factor=RETRY_BACKOFF_S, retries=task.request.retries, maximum=RETRY_BACKOFF_MAX_S,
        full_jitter=True,
    ))


def _reason(exc: BaseException) -> str:
    return getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"


def _retry_or_give_up(task: Task, exc: BaseException, doc_id: str, settings: Settings,
                      *, give_up: Any, before_retry: Any = None) -> NoReturn:
    """After a transient error: ``give_up(message)`` and re-raise once the
    retries are spent, else retry with exponential backoff."""
    if task.request.retries >= settings.celery.max_retries:
        give_up(f"gave up after {task.request.retries + 1} attempts: {_reason(exc)}")
        raise exc
    if before_retry is not None:
        before_retry()
    countdown = _backoff(task)
    logger.warning("transient failure, retrying",
                   extra={"doc_id": doc_id, "countdown": countdown, "reason": _reason(exc)})
    raise task.retry(exc=exc, countdown=countdown,
                     max_retries=settings.celery.max_retries) from exc


def _time_limit_error(settings: Settings) -> str:
    return (f"took longer than {settings.celery.task_soft_time_limit_s}s "
            "(SIROCCO_CELERY__TASK_SOFT_TIME_LIMIT_S)")


def parse_document_task(self: Task, doc_id: str, job_id: str | None = None) -> int:
    """Stage 1: parse and chunk one document, then queue its embedding.

    With ``job_id`` the job's item is claimed first (a cancelled item is
    skipped); a bad file fails the item at once, transient errors retry with
    exponential backoff up to ``celery.max_retries``.
    """
    settings = _settings(self)
    res = worker_resources(settings)
    factory = res.session_factory
    if job_id is not None and not start_item(job_id, doc_id, session_factory=factory):
        return 0

    def fail(error: str) -> None:
        try:
            mark_document(doc_id, session_factory=factory, status="failed", error=error)
            if job_id is not None:
                finish_item(job_id, doc_id, session_factory=factory, state="failed", error=error)
        except Exception:  # the database may be what failed; the log keeps the reason
            logger.exception("could not record document status", extra={"doc_id": doc_id})

    try:
        staged = parse_document(doc_id, session_factory=factory, tokenizer=res.tokenizer,
                                settings=settings, job_id=job_id)
    except NotFoundError:
        logger.warning("document vanished, nothing to do", extra={"doc_id": doc_id})
        if job_id is not None:
            finish_item(job_id, doc_id, session_factory=factory, state="failed",
                        error="the document was deleted before it was ingested")
        return 0
    except TRANSIENT as exc:
        reason = _reason(exc)
        _retry_or_give_up(self, exc, doc_id, settings, give_up=fail, before_retry=lambda: (
            mark_document(doc_id, session_factory=factory, status="queued",
                          error=f"will retry: {reason}")))
    except SoftTimeLimitExceeded:
        fail(_time_limit_error(settings))
        raise
    except Exception as exc:
        fail(f"internal error: {type(exc).__name__}: {exc}")
        raise
    if staged is None:  # a bad file: failed with its message
        return 0
    # After the commit above, so the embed task finds the staged chunks.
    self.app.tasks[EMBED_DOCUMENT].apply_async(args=[doc_id])
    return staged


def embed_document_task(self: Task, doc_id: str) -> int:
    """Stage 2: embed and store ``doc_id`` with other parsed documents in one
    batch; returns the chunks stored for ``doc_id`` by this task (0 when
    another task stored it).

    A document held by another live task is looked at again later; a
    transient error hands the batch back and retries with backoff; after
    ``celery.max_retries`` the document fails with the reason.
    """
    settings = _settings(self)
    res = worker_resources(settings)
    factory = res.session_factory
    try:
        outcome = embed_staged(doc_id, session_factory=factory, embedder=res.embedder,
                               store=res.store, settings=settings)
    except TRANSIENT as exc:
        _retry_or_give_up(self, exc, doc_id, settings, give_up=lambda message: fail_documents(
            [doc_id], message, session_factory=factory))
    except SoftTimeLimitExceeded:
        fail_documents([doc_id], _time_limit_error(settings), session_factory=factory)
        raise
    except Exception as exc:
        fail_documents([doc_id], f"internal error: {type(exc).__name__}: {exc}",
                       session_factory=factory)
        raise
    if outcome.wait_s is not None:
        # Not a failure: the holder finishes it, or its lease runs out and we take over.
        raise self.retry(countdown=min(outcome.wait_s, LEASE_POLL_S), max_retries=None)
    return outcome.stored.get(doc_id, 0)


def register_tasks(app: Celery) -> None:
    """Register the ingestion tasks on ``app`` (``create_celery`` registers every
    task module from one list, so task modules never import each other)."""
    app.task(name=PARSE_DOCUMENT, bind=True, ignore_result=True)(parse_document_task)
    app.task(name=EMBED_DOCUMENT, bind=True, ignore_result=True)(embed_document_task)


def enqueue_documents(
    celery_app: Celery,
    doc_ids: Iterable[str],
    *,
    job_id: str | None = None,
) -> list[str]:
    """Send one parse task per document id (as items of ``job_id`` if given) to
    the parse queue; returns the task ids.

    Call it after the transaction that created the rows has committed, or the
    worker may not find them. Raises ``UnavailableError`` when the broker is down.
    """
    ids: list[str] = []
    try:
        with celery_app.producer_or_acquire() as producer:
            for doc_id in doc_ids:
                args = [doc_id] if job_id is None else [doc_id, job_id]
                ids.append(celery_app.send_task(PARSE_DOCUMENT, args=args,
                                                producer=producer).id)
    except (BrokerError, OSError) as exc:
        raise UnavailableError(
            f"the task queue is unreachable ({exc}); {len(ids)} document(s) were queued"
        ) from exc
    return ids
