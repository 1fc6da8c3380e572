"""The embed stage (embed queue): claim a parsed document and other parsed
ones, up to ``embedding.max_batch_chunks`` chunks, with a lease; embed all
their chunks in one call (cross-document batching), replace their points in
the store, mark them done and finish their job items. ``ingest_document``
runs both stages for one document in this process.

Each document keeps its own embed message until it leaves "parsed"/"embedding":
a task whose document is held by another task's unexpired lease asks to be
retried when the lease ends (``EmbedOutcome.wait_s``), and any embed task takes
over documents whose lease expired (their claimer died).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ingest.embedding.base import Embedder
from ingest.jobs import finish_items_in
from ingest.models import Document, StagedChunks
from ingest.pipeline import (
    embedding_text,
    fail_document,
    max_attempts,
    parse_document,
)
from ingest.rebuild import finish_if_rebuilt
from retrieval.store import Store
from sirocco.db import rows_changed, session_scope, utcnow
from sirocco.settings import Settings
from sirocco.types import EVERYONE, Chunk

logger = logging.getLogger(__name__)

#: Candidates looked at per claim; the chunk budget usually stops earlier.
_CLAIM_SCAN = 256


@dataclass(slots=True)
class EmbedOutcome:
    """What ``embed_staged`` did: chunk counts of the documents it stored, and
    ``wait_s`` when the asked-for document is held by another live task (retry
    after that many seconds; the other task may still fail)."""

    stored: dict[str, int] = field(default_factory=dict)
    wait_s: float | None = None


def embed_staged(
    doc_id: str,
    *,
    session_factory: sessionmaker[Session],
    embedder: Embedder,
    store: Store,
    settings: Settings,
) -> EmbedOutcome:
    """Store ``doc_id`` (if it is still to be embedded) together with other
    parsed documents, in one embedding batch.

    On a transient error (``UnavailableError`` ...) the claims are released
    (the documents are "parsed" again) and the error propagates for a retry.
    """
    claimed, wait_s = claim_batch(doc_id, session_factory=session_factory, settings=settings)
    if not claimed:
        return EmbedOutcome(wait_s=wait_s)
    try:
        stored = store_claimed(claimed, session_factory=session_factory, embedder=embedder,
                               store=store, settings=settings)
    except BaseException:
        release_claims(claimed, session_factory=session_factory)
        raise
    return EmbedOutcome(stored=stored, wait_s=None if doc_id in claimed else wait_s)


def claim_batch(
    doc_id: str, *, session_factory: sessionmaker[Session], settings: Settings
) -> tuple[list[str], float | None]:
    """Claim ``doc_id`` first, then other parsed documents (oldest first) and
    documents whose lease expired, within the chunk budget; each claim is a
    conditional UPDATE, so two tasks never hold one document.

    Returns the claimed ids and, when ``doc_id`` is held by another task's
    live lease, the seconds until that lease ends. Documents past
    ``max_attempts`` embed claims are failed instead of claimed.
    """
    now = utcnow()
    lease_s = settings.celery.task_time_limit_s
    claimable = or_(
        Document.status == "parsed",
        and_(Document.status == "embedding", Document.lease_until < now),
    )
    budget = max(1, settings.embedding.max_batch_chunks)
    claimed: list[str] = []
    with session_scope(session_factory) as session:
        rows = session.execute(
            select(Document.id, Document.attempts, StagedChunks.chunk_count)
            .join(StagedChunks, StagedChunks.document_id == Document.id)
            .where(claimable)
            .order_by(case((Document.id == doc_id, 0), else_=1), Document.updated_at)
            .limit(_CLAIM_SCAN)
        ).all()
        total = 0
        for cand, attempts, n in rows:
            if claimed and total + n > budget:
                continue
            if attempts >= max_attempts(settings):
                _give_up_embedding(session, cand, attempts)
                continue
            won = rows_changed(session,
                update(Document).where(Document.id == cand, claimable)
                .values(status="embedding", lease_until=now + timedelta(seconds=lease_s),
                        attempts=Document.attempts + 1)
                .execution_options(synchronize_session=False)
            )
            if won:
                claimed.append(cand)
                total += n
        wait_s = None
        if doc_id not in claimed:
            doc = session.get(Document, doc_id)
            if doc is not None and doc.status == "embedding" and doc.lease_until is not None:
                wait_s = max(1.0, (_aware(doc.lease_until) - now).total_seconds() + 1.0)
    return claimed, wait_s


def store_claimed(
    doc_ids: Sequence[str],
    *,
    session_factory: sessionmaker[Session],
    embedder: Embedder,
    store: Store,
    settings: Settings,
) -> dict[str, int]:
    """Embed the staged chunks of claimed documents in one call, replace their
    points, mark them done and finish their job items; returns chunk counts.
    A document re-queued or deleted meanwhile is not marked done (a deleted
    one loses the points just written)."""
    with session_scope(session_factory) as session:
        staged = list(session.scalars(
            select(StagedChunks).where(StagedChunks.document_id.in_(doc_ids))
        ))
        access = access_of(session, doc_ids)
    # The ACL and tags as they are now, not as they were at parse time: a
    # source's access may have been narrowed since (``set_source_access``).
    chunks_of = {s.document_id: [replace(_chunk(d), **_facts(access, s.document_id))
                                 for d in json.loads(s.chunks)] for s in staged}
    chunks = [c for s in staged for c in chunks_of[s.document_id]]
    # One call for the whole claim (at most max_batch_chunks): the embedder sorts
    # by length and batches inside it, so padding stays small across documents.
    vectors = embedder.embed_documents([embedding_text(c) for c in chunks])
    store.replace_documents(list(chunks_of), chunks, vectors)
    with session_scope(session_factory) as session:
        changed = {d: a for d, a in access_of(session, list(chunks_of)).items()
                   if a != access.get(d)}
    for doc_id, (acl, tags) in changed.items():  # narrowed while we embedded
        store.set_access([doc_id], acl=acl, tags=tags)

    stored, gone = _mark_done(staged, session_factory)
    for doc_id in gone:  # deleted while we worked: leave no orphan chunks
        store.delete_document(doc_id)
        with session_scope(session_factory) as session:
            session.execute(delete(StagedChunks).where(StagedChunks.document_id == doc_id))
    # The batch may have finished a rebuild job: then its collection goes live.
    finish_if_rebuilt({s.job_id for s in staged if s.job_id and s.document_id in stored},
                      session_factory=session_factory, store=store)
    logger.info("embedded", extra={"documents": len(stored), "chunks": len(chunks)})
    return stored


def _mark_done(staged: Sequence[StagedChunks], session_factory: sessionmaker[Session]
               ) -> tuple[dict[str, int], list[str]]:
    """Mark the stored documents done, drop their staged chunks and finish
    their job items (one statement per job, not per item), in one
    transaction; returns the chunk counts of those marked and the ids of
    documents deleted meanwhile. A document re-queued meanwhile is left as it is."""
    stored: dict[str, int] = {}
    gone: list[str] = []
    by_job: dict[str, list[str]] = {}
    with session_scope(session_factory) as session:
        for s in staged:
            moved = rows_changed(session,
                update(Document)
                .where(Document.id == s.document_id, Document.status == "embedding")
                .values(status="done", error=None, title=s.title, mime_type=s.mime_type,
                        content_hash=s.content_hash, chunk_count=s.chunk_count, attempts=0,
                        lease_until=None, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if not moved:
                if session.get(Document, s.document_id) is None:
                    gone.append(s.document_id)
                continue
            stored[s.document_id] = s.chunk_count
            if s.job_id is not None:
                by_job.setdefault(s.job_id, []).append(s.document_id)
        if stored:
            session.execute(delete(StagedChunks).where(StagedChunks.document_id.in_(list(stored)))
                            .execution_options(synchronize_session=False))
        for job_id, doc_ids in by_job.items():
            finish_items_in(session, job_id, doc_ids, state="done")
    return stored, gone


def release_claims(doc_ids: Sequence[str], *, session_factory: sessionmaker[Session]) -> None:
    """Hand claimed documents back ("parsed") after a failed batch."""
    with session_scope(session_factory) as session:
        session.execute(
            update(Document).where(Document.id.in_(doc_ids), Document.status == "embedding")
            .values(status="parsed", lease_until=None)
            .execution_options(synchronize_session=False)
        )


def _give_up_embedding(session: Session, doc_id: str, attempts: int) -> None:
    doc = session.get(Document, doc_id)
    if doc is None:
        return
    staged = session.get(StagedChunks, doc_id)
    logger.warning("giving up embedding", extra={"doc_id": doc_id, "attempts": attempts})
    fail_document(session, doc, f"gave up after {attempts} embedding attempts that did not finish "
          "(the worker was killed, out of memory or over the time limit?)",
          staged.job_id if staged else None)


def access_of(session: Session, doc_ids: Sequence[str]
              ) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """The ACL (``EVERYONE`` when open) and tags each chunk of these documents carries."""
    rows = session.execute(select(Document.id, Document.acl, Document.tags)
                           .where(Document.id.in_(list(doc_ids))))
    return {i: (tuple(acl or (EVERYONE,)), tuple(tags or ())) for i, acl, tags in rows}


def _facts(access: dict[str, tuple[tuple[str, ...], tuple[str, ...]]], doc_id: str
           ) -> dict[str, Any]:
    if doc_id not in access:
        return {}
    acl, tags = access[doc_id]
    return {"acl": acl, "tags": tags}


def _chunk(d: dict[str, Any]) -> Chunk:
    return Chunk(**{**d, **{k: tuple(d.get(k) or ()) for k in ("headings", "tags")},
                    "acl": tuple(d.get("acl") or (EVERYONE,))})


def _aware(ts: Any) -> Any:
    """SQLite returns naive datetimes for timezone columns: they are UTC."""
    from datetime import UTC

    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def ingest_document(
    doc_id: str,
    *,
    session_factory: sessionmaker[Session],
    embedder: Embedder,
    store: Store,
    settings: Settings,
    job_id: str | None = None,
) -> int:
    """Parse, chunk, embed and store one registered document in this process;
    returns its chunk count (0 when it failed: see the document's error).
    Idempotent; transient errors propagate."""
    if parse_document(doc_id, session_factory=session_factory, tokenizer=embedder,
                      settings=settings, job_id=job_id) is None:
        return 0
    claimed = settings.model_copy(update={"embedding": settings.embedding.model_copy(
        update={"max_batch_chunks": 1})})  # this document alone
    outcome = embed_staged(doc_id, session_factory=session_factory, embedder=embedder,
                           store=store, settings=claimed)
    return outcome.stored.get(doc_id, 0)
