"""Celery tasks: thin wrappers that re-fetch by id and call ``ingest.pipeline``.

Two stages on two queues (``queue_names``): ``sirocco.ingest.parse`` parses
and chunks a batch of documents (``celery.parse_batch_docs`` a message, each
document with its own outcome, job item and retries), then sends one
``sirocco.ingest.embed`` for those it staged, which embeds them together with
other parsed documents. Batches keep the broker's per-message cost (a poll of
the embedded SQL broker, a round trip to Redis) off each document. Heavy resources (embedding model,
tokenizer, store, SQL engine) are built once per task process, as it starts
(``workers.resources.warm_resources``) or on first use, so a prefork parent
never imports torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any, NoReturn

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as DatabaseDown
from sqlalchemy.orm import Session, sessionmaker

from ingest.embed_stage import embed_staged
from ingest.jobs import finish_item, job_cancelled
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
    """Stage ("parse" | "embed" | "exports") -> its queue name. Exports and
    other short tasks have a queue of their own, so they never wait behind a
    large ingestion."""
    prefix = settings.celery.queue_prefix
    return {"parse": f"{prefix}.parse", "embed": f"{prefix}.embed",
            "exports": f"{prefix}.exports"}


def task_routes(settings: Settings) -> dict[str, dict[str, str]]:
    """Each ingestion task to its stage's queue."""
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
                      *, give_up: Any, args: list[Any] | None = None) -> NoReturn:
    """After a transient error: ``give_up(message)`` and re-raise once the
    retries are spent, else retry (with ``args`` if given) with exponential backoff."""
    if task.request.retries >= settings.celery.max_retries:
        give_up(f"gave up after {task.request.retries + 1} attempts: {_reason(exc)}")
        raise exc
    countdown = _backoff(task)
    logger.warning("transient failure, retrying",
                   extra={"doc_id": doc_id, "countdown": countdown, "reason": _reason(exc)})
    raise task.retry(args=args, exc=exc, countdown=countdown,
                     max_retries=settings.celery.max_retries) from exc


def _time_limit_error(settings: Settings) -> str:
    return (f"took longer than {settings.celery.task_soft_time_limit_s}s "
            "(SIROCCO_CELERY__TASK_SOFT_TIME_LIMIT_S)")


def _ids(doc_ids: str | Sequence[str]) -> list[str]:
    """A message's documents: one id (messages sent before batching) or a list."""
    return [doc_ids] if isinstance(doc_ids, str) else list(doc_ids)


def _parse_one(self: Task, doc_id: str, job_id: str | None, settings: Settings) -> int | None:
    """Parse one document of a batch: its chunk count when staged, None when
    there is nothing to embed (skipped, vanished, or failed with its message).
    Transient errors propagate; any other error fails this document only."""
    res = worker_resources(settings)
    factory = res.session_factory

    def fail(error: str) -> None:
        _fail_parse(doc_id, job_id, error, factory)

    try:
        # The item is claimed in the transaction that starts the parse.
        return parse_document(doc_id, session_factory=factory, tokenizer=res.tokenizer,
                              settings=settings, job_id=job_id, claim_item=True)
    except NotFoundError:  # its item, if any, failed with the reason
        logger.warning("document vanished, nothing to do", extra={"doc_id": doc_id})
        return None
    except (*TRANSIENT, SoftTimeLimitExceeded):
        raise
    except Exception as exc:  # this document's own failure: its batch-mates go on
        logger.exception("parse failed", extra={"doc_id": doc_id})
        fail(f"internal error: {type(exc).__name__}: {exc}")
        return None


def _fail_parse(doc_id: str, job_id: str | None, error: str,
                factory: sessionmaker[Session]) -> None:
    try:
        mark_document(doc_id, session_factory=factory, status="failed", error=error)
        if job_id is not None:
            finish_item(job_id, doc_id, session_factory=factory, state="failed", error=error)
    except Exception:  # the database may be what failed; the log keeps the reason
        logger.exception("could not record document status", extra={"doc_id": doc_id})


def parse_document_task(self: Task, doc_ids: str | list[str], job_id: str | None = None
                        ) -> int:
    """Stage 1: parse and chunk a batch of documents, then queue their
    embedding in one message; returns the chunks staged.

    A cancelled job's batch is dropped with one query. With ``job_id`` each
    document's item is claimed first (a cancelled or finished item is
    skipped), so a redelivered batch redoes only what is unfinished. Each
    document fails on its own (a bad file, an internal error); a transient
    error sends that document and the rest of the batch again with
    exponential backoff, up to ``celery.max_retries``, after which that
    document fails and the rest go on in a fresh message. A batch running
    past ``celery.parse_batch_s`` hands its remainder on in a new message.
    """
    settings = _settings(self)
    factory = worker_resources(settings).session_factory
    ids = _ids(doc_ids)
    if job_id is not None and job_cancelled(job_id, session_factory=factory):
        logger.info("job cancelled, batch dropped", extra={"job_id": job_id, "documents": len(ids)})
        return 0
    staged: dict[str, int] = {}
    started = time.monotonic()
    try:
        for i, doc_id in enumerate(ids):
            if i and time.monotonic() - started > settings.celery.parse_batch_s:
                self.app.tasks[PARSE_DOCUMENT].apply_async(args=[ids[i:], job_id])
                break
            try:
                n = _parse_one(self, doc_id, job_id, settings)
            except TRANSIENT as exc:
                _retry_rest(self, exc, ids[i:], job_id, settings)
                break  # given up on ids[i]; the rest went on in a fresh message
            except SoftTimeLimitExceeded:
                _fail_parse(doc_id, job_id, _time_limit_error(settings), factory)
                if ids[i + 1:]:
                    self.app.tasks[PARSE_DOCUMENT].apply_async(args=[ids[i + 1:], job_id])
                break
            if n is not None:
                staged[doc_id] = n
    finally:
        # After each document's commit, so the embed task finds the staged chunks.
        if staged:
            self.app.tasks[EMBED_DOCUMENT].apply_async(args=[list(staged)])
    return sum(staged.values())


def _retry_rest(self: Task, exc: BaseException, rest: list[str], job_id: str | None,
                settings: Settings) -> None:
    """``rest[0]`` hit a transient error: retry ``rest`` with backoff; once the
    retries are spent, fail ``rest[0]`` and send the others in a fresh message."""
    factory = worker_resources(settings).session_factory
    doc_id, reason = rest[0], _reason(exc)
    if self.request.retries >= settings.celery.max_retries:
        _fail_parse(doc_id, job_id, f"gave up after {self.request.retries + 1} attempts: "
                    f"{reason}", factory)
        if rest[1:]:
            self.app.tasks[PARSE_DOCUMENT].apply_async(args=[rest[1:], job_id])
        return
    try:
        mark_document(doc_id, session_factory=factory, status="queued",
                      error=f"will retry: {reason}")
    except TRANSIENT:
        pass  # the database is what failed; the retry records the outcome
    countdown = _backoff(self)
    logger.warning("transient failure, retrying",
                   extra={"doc_id": doc_id, "documents": len(rest), "countdown": countdown,
                          "reason": reason})
    raise self.retry(args=[rest, job_id], exc=exc, countdown=countdown,
                     max_retries=settings.celery.max_retries) from exc


def embed_document_task(self: Task, doc_ids: str | list[str]) -> int:
    """Stage 2: embed and store these documents with other parsed ones, in as
    few embedding batches as the chunk budget allows; returns the chunks
    stored for ``doc_ids`` by this task (0 for one another task stored).

    Documents held by another live task are looked at again later (one
    message for them all); a transient error hands the claims back and
    retries what is left with backoff; after ``celery.max_retries`` those
    documents fail with the reason.
    """
    settings = _settings(self)
    res = worker_resources(settings)
    factory = res.session_factory
    ids = _ids(doc_ids)
    stored: dict[str, int] = {}
    waiting: dict[str, float] = {}
    for i, doc_id in enumerate(ids):
        if doc_id in stored:
            continue  # embedded with an earlier one of the message
        try:
            outcome = embed_staged(doc_id, session_factory=factory, embedder=res.embedder,
                                   store=res.store, settings=settings)
        except TRANSIENT as exc:
            rest = [d for d in ids[i:] if d not in stored]

            def give_up(message: str, rest: list[str] = rest) -> None:
                fail_documents(rest, message, session_factory=factory)
                _send_on(self, list(waiting))

            _retry_or_give_up(self, exc, doc_id, settings, args=[rest + list(waiting)],
                              give_up=give_up)
        except SoftTimeLimitExceeded:
            fail_documents([doc_id], _time_limit_error(settings), session_factory=factory)
            _send_on(self, [d for d in ids[i + 1:] if d not in stored] + list(waiting))
            raise
        except Exception as exc:
            fail_documents([doc_id], f"internal error: {type(exc).__name__}: {exc}",
                           session_factory=factory)
            _send_on(self, [d for d in ids[i + 1:] if d not in stored] + list(waiting))
            raise
        stored.update(outcome.stored)
        if outcome.wait_s is not None:
            waiting[doc_id] = outcome.wait_s
    if waiting:
        # Not a failure: the holder finishes them, or its lease runs out and we take over.
        raise self.retry(args=[list(waiting)], countdown=min(min(waiting.values()), LEASE_POLL_S),
                         max_retries=None)
    return sum(stored.get(d, 0) for d in ids)


def _send_on(self: Task, doc_ids: list[str]) -> None:
    """The rest of a message whose task is about to fail, in a message of its own."""
    if doc_ids:
        self.app.tasks[self.name].apply_async(args=[doc_ids])


def register_tasks(app: Celery) -> None:
    """Register the ingestion tasks on ``app`` (``create_celery`` registers every
    task module from one list, so task modules never import each other)."""
    app.task(name=PARSE_DOCUMENT, bind=True, ignore_result=True)(parse_document_task)
    app.task(name=EMBED_DOCUMENT, bind=True, ignore_result=True)(embed_document_task)


def batches(doc_ids: Iterable[str], size: int) -> Iterator[list[str]]:
    """``doc_ids`` in order, ``size`` at a time (at least one)."""
    it = iter(doc_ids)
    while batch := list(islice(it, max(1, size))):
        yield batch


def enqueue_documents(
    celery_app: Celery,
    doc_ids: Iterable[str],
    *,
    job_id: str | None = None,
) -> list[str]:
    """Send parse messages for these document ids (as items of ``job_id`` if
    given), ``celery.parse_batch_docs`` documents a message, to the parse
    queue; returns each document's task id (shared by the documents of one
    message).

    Call it after the transaction that created the rows has committed, or the
    worker may not find them. Raises ``UnavailableError`` when the broker is down.
    """
    settings = getattr(celery_app, "settings", None) or get_settings()
    ids: list[str] = []
    try:
        with celery_app.producer_or_acquire() as producer:
            for batch in batches(doc_ids, settings.celery.parse_batch_docs):
                args: list[Any] = [batch] if job_id is None else [batch, job_id]
                task_id = celery_app.send_task(PARSE_DOCUMENT, args=args, producer=producer).id
                ids.extend([task_id] * len(batch))
    except (BrokerError, OSError) as exc:
        raise UnavailableError(
            f"the task queue is unreachable ({exc}); {len(ids)} document(s) were queued"
        ) from exc
    return ids
