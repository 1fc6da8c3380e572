"""Sending again the ingestion messages the broker lost.

Acks-late brings back the message of a worker that died while it held it, on
Redis after the visibility timeout. Three cases are not covered:

- kombu's Redis transport takes a message with ``BRPOP`` and only then records
  it as unacked, so a worker killed between the two loses it for good;
- kombu's SQL transport (the embedded broker) marks a taken message invisible
  and never brings it back: a killed embedded worker loses all it held;
- a job enqueued while the broker was down (``enqueue_documents`` raised)
  keeps items that no message will ever start.

Either way the job would never finish. ``recover_lost`` closes the gap from the
database, which says what is still to do, and the broker, which says what is
on its way. Stale work, unchanged for ``celery.recover_after_s``:

- a job item still queued;
- a job item running whose document is still being parsed (or waits for a
  parse retry) after the task time limit on top of that: its task is dead;
- a parsed document (or one whose embed lease ran out) that old.

Each gets a new message unless one waits in its queue or is held by a worker
(Redis: the unacked set, every worker's; SQL broker: this worker's own tasks,
as the embedded broker has one worker). Tasks are idempotent (``start_item_in``
claims an item once, point ids are deterministic), so a message sent twice in
a race costs work, never a wrong count.

Every worker runs it every ``celery.recover_interval_s`` (``RecoveryStep``, a
consumer bootstep on the worker's event loop); on Redis a key makes it one
sweep per interval across all workers.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery import bootsteps
from sqlalchemy import (
    Engine,
    and_,
    bindparam,
    create_engine,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from ingest.jobs import ACTIVE
from ingest.models import Document, Job, JobItem, StagedChunks
from sirocco.db import make_engine, make_session_factory, session_scope, utcnow
from sirocco.settings import Settings
from workers.tasks import EMBED_DOCUMENT, PARSE_DOCUMENT, batches, queue_names

if TYPE_CHECKING:
    from celery import Celery
    from redis import Redis

logger = logging.getLogger(__name__)

#: kombu's Redis transport: priority sub-queues are "<queue><SEP><priority>".
_PRIORITY_SEP, _PRIORITY_STEPS = "\x06\x16", (0, 3, 6, 9)
#: kombu's default key of the unacked messages (the transport's ``unacked_key``).
UNACKED_KEY = "unacked"
#: Rows looked at per sweep; the rest wait for the next one.
SWEEP_LIMIT = 1000
#: With more messages than this waiting, a sweep does nothing: queued items are
#: most likely behind them, and reading them all would stall the worker's loop.
MAX_SCAN = 20_000


@dataclass
class Recovered:
    """What one sweep sent again: (job id, document id) parse messages and
    document ids of embed messages; ``skipped`` says why it did nothing."""

    parse: list[tuple[str, str]] = field(default_factory=list)
    embed: list[str] = field(default_factory=list)
    skipped: str | None = None


def _queue_keys(queue: str) -> list[str]:
    return [queue if p == 0 else f"{queue}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS]


def message_tasks(raw: bytes | str) -> list[tuple[str, str]]:
    """(task name, document id) for each document of a kombu message, as
    queued (the payload) or unacked on Redis (``[payload, exchange,
    routing_key]``); a message's first argument is one document id or a batch
    of them. Empty for anything else."""
    try:
        payload: Any = json.loads(raw)
        if isinstance(payload, list):
            payload = payload[0]
        task = payload["headers"]["task"]
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return _pairs(task, args[0])
    except (ValueError, TypeError, KeyError, IndexError):
        return []


def _pairs(task: Any, first: Any) -> list[tuple[str, str]]:
    ids = [first] if isinstance(first, str) else first if isinstance(first, list) else []
    if not isinstance(task, str) or not all(isinstance(i, str) for i in ids):
        return []
    return [(task, i) for i in ids]


def _found(raws: Iterable[bytes | str]) -> set[tuple[str, str]]:
    return {t for raw in raws for t in message_tasks(raw)}


def redis_pending(client: Redis, queues: Sequence[str]) -> set[tuple[str, str]] | None:
    """(task name, document id) of every message waiting in ``queues`` or held
    unacked by some worker (running, prefetched, or waiting for a retry's ETA);
    None when there are more than ``MAX_SCAN``."""
    keys = [k for q in queues for k in _queue_keys(q)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    pipe.hlen(UNACKED_KEY)
    if sum(pipe.execute()) > MAX_SCAN:
        return None
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.lrange(key, 0, -1)
    pipe.hvals(UNACKED_KEY)
    return _found(raw for raws in pipe.execute() for raw in raws)


def sql_pending(broker_url: str, queues: Sequence[str]) -> set[tuple[str, str]] | None:
    """(task name, document id) of every message waiting in ``queues`` of
    kombu's SQL transport (``sqla+<url>``); None when there are more than
    ``MAX_SCAN``. Taken messages stay as invisible rows, acked or not, so they
    say nothing: ``held_here`` stands for them."""
    engine = create_engine(broker_url.removeprefix("sqla+"), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("kombu_message"):
                return set()  # no message was ever sent
            where = ("FROM kombu_message m JOIN kombu_queue q ON m.queue_id = q.id "
                     "WHERE q.name IN :queues AND m.visible")
            params = {"queues": list(queues)}
            count = conn.execute(
                text(f"SELECT count(*) {where}").bindparams(bindparam("queues", expanding=True)),
                params).scalar_one()
            if count > MAX_SCAN:
                return None
            rows = conn.execute(
                text(f"SELECT m.payload {where}").bindparams(bindparam("queues", expanding=True)),
                params)
            return _found(payload for (payload,) in rows)
    finally:
        engine.dispose()


def held_here() -> set[tuple[str, str]]:
    """(task name, document id) of the tasks this worker holds: prefetched,
    running, or waiting for a retry's ETA (empty outside a worker)."""
    from celery.worker import state

    held: set[tuple[str, str]] = set()
    for req in list(state.requests.values()):
        args = getattr(req, "args", None) or ()
        if args:
            held.update(_pairs(req.name, args[0]))
    return held


def pending_messages(settings: Settings, client: Redis | None) -> set[tuple[str, str]] | None:
    """What the broker still holds for our queues, plus this worker's tasks;
    None when there is too much to look at."""
    names = queue_names(settings)
    queues = [names["parse"], names["embed"]]
    if settings.redis.url:
        assert client is not None, "a Redis broker needs its client"
        found = redis_pending(client, queues)
    else:
        found = sql_pending(settings.broker_url, queues)
    return None if found is None else found | held_here()


def _stale(session: Session, settings: Settings) -> tuple[list[tuple[str, str]], list[str]]:
    """(job id, document id) of items to parse and ids of documents to embed
    that have been stale for ``recover_after_s`` (see the module docstring)."""
    c = settings.celery
    now = utcnow()
    cutoff = now - timedelta(seconds=c.recover_after_s)
    parse_dead = now - timedelta(seconds=c.recover_after_s + c.task_time_limit_s)
    items = session.execute(
        select(JobItem.job_id, JobItem.document_id)
        .join(Job, Job.id == JobItem.job_id)
        .join(Document, Document.id == JobItem.document_id)
        .where(Job.state.in_(ACTIVE), or_(
            and_(JobItem.state == "queued", JobItem.updated_at < cutoff),
            and_(JobItem.state == "running", Document.status.in_(("queued", "running")),
                 Document.updated_at < parse_dead, JobItem.updated_at < parse_dead),
        ))
        .order_by(JobItem.id).limit(SWEEP_LIMIT)
    ).all()
    parsed = session.scalars(
        select(Document.id)
        .join(StagedChunks, StagedChunks.document_id == Document.id)
        .where(or_(Document.status == "parsed",
                   and_(Document.status == "embedding", Document.lease_until < now)),
               Document.updated_at < cutoff)
        .order_by(Document.updated_at).limit(SWEEP_LIMIT)
    ).all()
    return [(j, d) for j, d in items], list(parsed)


def recover_lost(
    settings: Settings, *, session_factory: sessionmaker[Session], celery_app: Celery,
    client: Redis | None = None,
) -> Recovered:
    """Send a parse message for each stale job item and an embed message for
    each stale parsed document that has none in the broker or in this worker
    (see the module docstring); ``client``: the Redis broker's."""
    with session_scope(session_factory) as session:
        items, parsed = _stale(session, settings)
    if not items and not parsed:
        return Recovered()
    pending = pending_messages(settings, client)
    if pending is None:
        return Recovered(skipped=f"more than {MAX_SCAN} messages waiting")
    out = Recovered(parse=[(j, d) for j, d in items if (PARSE_DOCUMENT, d) not in pending],
                    embed=[d for d in parsed if (EMBED_DOCUMENT, d) not in pending])
    if not out.parse and not out.embed:
        return out
    size = settings.celery.parse_batch_docs
    by_job: dict[str, list[str]] = {}
    for job_id, doc_id in out.parse:
        by_job.setdefault(job_id, []).append(doc_id)
    with celery_app.producer_or_acquire() as producer:
        for job_id, doc_ids in by_job.items():
            for batch in batches(doc_ids, size):
                celery_app.send_task(PARSE_DOCUMENT, args=[batch, job_id], producer=producer)
        for batch in batches(out.embed, size):
            celery_app.send_task(EMBED_DOCUMENT, args=[batch], producer=producer)
    if out.parse:  # the grace period starts again for these
        with session_scope(session_factory) as session:
            for job_id, doc_id in out.parse:
                session.execute(
                    update(JobItem)
                    .where(JobItem.job_id == job_id, JobItem.document_id == doc_id,
                           JobItem.state.in_(ACTIVE))
                    .values(updated_at=utcnow())
                )
    sent = [f"{len(ids)} {stage} (documents {_sample(ids)})" for stage, ids in
            (("parse", [d for _, d in out.parse]), ("embed", out.embed)) if ids]
    logger.warning("sent lost ingestion messages again: %s", ", ".join(sent),
                   extra={"parse": len(out.parse), "embed": len(out.embed)})
    return out


def _sample(ids: Iterable[str], n: int = 5) -> str:
    ids = list(ids)
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def sweep_lock_key(settings: Settings) -> str:
    return f"{settings.celery.queue_prefix}.recovery"


class RecoveryStep(bootsteps.StartStopStep):
    """Runs ``recover_lost`` every ``celery.recover_interval_s`` on the worker's
    timer; on Redis at most once per interval across the workers of one queue
    prefix. In a prefork worker it runs in the parent: SQL and the broker only,
    no model."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None
        self._engine: Engine | None = None
        self._client: Redis | None = None

    def start(self, c: Any) -> None:
        settings: Settings = c.app.settings
        interval = settings.celery.recover_interval_s
        if interval <= 0:
            return
        self.tref = c.timer.call_repeatedly(interval, self.sweep, (c.app,), priority=10)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def sweep(self, app: Celery) -> Recovered | None:
        """One sweep unless another worker took this interval's; errors are
        logged (the next interval tries again), never raised into the loop."""
        settings: Settings = app.settings
        try:
            if settings.redis.url:
                if self._client is None:
                    import redis

                    self._client = redis.Redis.from_url(settings.redis.url, socket_timeout=10)
                if not self._client.set(sweep_lock_key(settings), "1", nx=True,
                                        ex=max(1, settings.celery.recover_interval_s - 1)):
                    return None
            if self._engine is None:
                self._engine = make_engine(settings)
            try:
                out = recover_lost(settings, session_factory=make_session_factory(self._engine),
                                   celery_app=app, client=self._client)
            finally:
                # No connection stays open between sweeps, so a pool child forked
                # meanwhile inherits none.
                self._engine.dispose()
            if out.skipped:
                logger.info("recovery sweep skipped", extra={"reason": out.skipped})
            return out
        except Exception:
            logger.exception("recovery sweep failed; the next one tries again")
            return None
