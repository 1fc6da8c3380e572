"""Ingesting a registered document, in two stages that run on separate queues.

1. ``parse_document`` (parse queue): read, parse and chunk one file; stage the
   chunks in SQL (``StagedChunks``); status "parsed".
2. ``embed_staged`` (embed queue): claim this document and other parsed ones,
   up to ``embedding.max_batch_chunks`` chunks, with a lease; embed all their
   chunks in one call (cross-document batching), replace their points in the
   store, mark them done and finish their job items.

Each document keeps its own embed message until it leaves "parsed"/"embedding":
a task whose document is held by another task's unexpired lease asks to be
retried when the lease ends (``EmbedOutcome.wait_s``), and any embed task takes
over documents whose lease expired (their claimer died). Points have
deterministic ids, so doing a document twice never duplicates its chunks.

The embed stage and ``ingest_document`` (both stages for one document in
this process) live in ``ingest.embed_stage``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from ingest.chunker import chunk_document
from ingest.formats.base import Limits
from ingest.formats.text import atx_heading_text
from ingest.jobs import finish_item_in, start_item_in
from ingest.models import Document, Source, StagedChunks
from ingest.parsers import parse_bytes, read_file
from ingest.sources import display_path
from sirocco.db import session_scope, utcnow
from sirocco.errors import InvalidInputError, NotFoundError, ParseError
from sirocco.settings import Settings
from sirocco.types import EVERYONE, Chunk

logger = logging.getLogger(__name__)

#: Tokens kept free in the embedder's input for the heading path (``embedding_text``).
HEADER_TOKENS = 32
_HEADER_CHARS = 4 * HEADER_TOKENS


def max_attempts(settings: Settings) -> int:
    """Tries per stage before a document that never finishes is given up."""
    return settings.celery.max_retries + 1


# -- stage 1: parse -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Begun:
    """A document as its parse starts: where it is read from and what every
    chunk carries."""

    source: str
    tenant: str
    shown: str
    facts: dict[str, Any]


#: A job item's error when its document was deleted before it was parsed.
DELETED_BEFORE_INGESTED = "the document was deleted before it was ingested"


def parse_document(
    doc_id: str,
    *,
    session_factory: sessionmaker[Session],
    tokenizer: Any,
    settings: Settings,
    job_id: str | None = None,
    claim_item: bool = False,
) -> int | None:
    """Parse and chunk one registered document and stage its chunks; returns
    how many, or None when the document is finished already (a bad file:
    marked failed with the message, its job item failed; or given up after
    ``max_attempts`` unfinished tries).

    ``claim_item``: claim the document's item of ``job_id`` in the same
    transaction that starts the parse (``ingest.jobs.start_item_in``); None
    when the item is no longer to be done, and a deleted document's item
    fails. ``tokenizer`` has ``tokenizer`` (a HF fast tokenizer) and
    ``max_seq_length`` (the embedder, or ``ingest.embedding.base.load_chunk_tokenizer``).
    Transient errors (``UnavailableError``, database down) propagate for the
    caller to retry. Raises ``NotFoundError`` when no such document exists.
    """
    claim = job_id if claim_item else None
    with session_scope(session_factory) as session:
        if claim is not None and not start_item_in(session, claim, doc_id):
            return None
        doc = session.get(Document, doc_id)
        if doc is None and claim is not None:
            finish_item_in(session, claim, doc_id, state="failed",
                           error=DELETED_BEFORE_INGESTED)
        begun = None if doc is None else _begin(session, doc, settings, job_id)
    if doc is None:
        raise NotFoundError(f"document {doc_id} does not exist")
    if begun is None:
        return None
    source, tenant, shown, facts = begun.source, begun.tenant, begun.shown, begun.facts

    try:
        limits = Limits.from_settings(settings.ingest)
        data = read_file(source, limits)
        parsed = parse_bytes(data, name=source, limits=limits)
        chunk_tokens, overlap_tokens = chunk_sizes(settings, tokenizer)
        chunks = chunk_document(
            parsed, doc_id=doc_id, source=shown, tenant=tenant,
            tokenizer=getattr(tokenizer, "tokenizer", None),
            chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens,
        )
        modified = _mtime(source)
        chunks = [replace(c, mime_type=parsed.mime_type, modified_at=modified, **facts)
                  for c in chunks]
    except (ParseError, InvalidInputError) as exc:
        logger.info("ingestion failed", extra={"doc_id": doc_id, "error": exc.message})
        with session_scope(session_factory) as session:
            fail_document(session, get_document(session, doc_id), exc.message, job_id)
        return None

    with session_scope(session_factory) as session:
        doc = get_document(session, doc_id)
        staged = session.get(StagedChunks, doc_id) or StagedChunks(document_id=doc_id)
        staged.job_id = job_id
        staged.chunk_count = len(chunks)
        staged.chunks = json.dumps([asdict(c) for c in chunks], ensure_ascii=False)
        staged.title, staged.mime_type = parsed.title, parsed.mime_type
        staged.content_hash = hashlib.sha256(data).hexdigest()
        staged.created_at = utcnow()
        session.add(staged)
        # The embed stage counts its own attempts.
        doc.status, doc.attempts = "parsed", 0
    logger.info("parsed", extra={"doc_id": doc_id, "chunks": len(chunks)})
    return len(chunks)


def _begin(session: Session, doc: Document, settings: Settings, job_id: str | None
           ) -> _Begun | None:
    """Count a parse attempt and mark ``doc`` running; None when it is given
    up instead (``max_attempts``)."""
    if doc.attempts >= max_attempts(settings):
        # Earlier tries never finished: the worker died on this document.
        error = (f"gave up after {doc.attempts} attempts that did not finish "
                 "(the worker was killed, out of memory or over the time limit?)")
        logger.warning("giving up", extra={"doc_id": doc.id, "attempts": doc.attempts})
        fail_document(session, doc, error, job_id)
        return None
    doc.attempts += 1
    doc.status, doc.error, doc.lease_until = "running", None, None
    # Citations and tools show this, never the absolute server path.
    shown = display_path(doc.source_path, session.get(Source, doc.source_id)
                         if doc.source_id else None)
    # What every chunk carries for filters and access control.
    facts: dict[str, Any] = {"acl": tuple(doc.acl or (EVERYONE,)),
                             "tags": tuple(doc.tags or ()), "source_id": doc.source_id}
    return _Begun(doc.source_path, doc.tenant, shown, facts)


def chunk_sizes(settings: Settings, embedder: Any) -> tuple[int, int]:
    """Chunk and overlap sizes from settings, shrunk so a chunk, its heading
    path (``HEADER_TOKENS``) and the model's two special tokens fit its
    ``max_seq_length`` (the rest would be cut off)."""
    chunk = settings.chunking.chunk_tokens
    limit = getattr(embedder, "max_seq_length", None)
    if isinstance(limit, int) and chunk > limit - 2 - HEADER_TOKENS:
        logger.warning(
            "chunk_tokens exceeds the embedding model's input; using its limit",
            extra={"chunk_tokens": chunk, "max_seq_length": limit},
        )
        chunk = max(1, limit - 2 - HEADER_TOKENS)
    overlap = min(settings.chunking.overlap_tokens, chunk // 2)
    return chunk, overlap


def embedding_text(chunk: Chunk) -> str:
    """What the embedder reads for a chunk: its document title and heading path,
    then its text. A chunk deep in a long section no longer loses what it is
    about; the stored text (and its character offsets) stay the chunk's own.
    A part the chunk opens with (a section's first chunk starts with its
    heading line) is not said twice."""
    opening = _opening_lines(chunk.text)
    path: list[str] = []
    for part in (chunk.title, *chunk.headings):
        part = " ".join(part.split())
        if part and part not in path and part not in opening:
            path.append(part)
    header = " > ".join(path)[:_HEADER_CHARS]
    return f"{header}\n\n{chunk.text}" if header else chunk.text


def _opening_lines(text: str, lines: int = 3) -> set[str]:
    """The first non-empty lines of ``text``, a heading line as its heading
    text (the Markdown parser's ATX rule), whitespace runs taken out."""
    out: set[str] = set()
    for line in text[:4 * _HEADER_CHARS].splitlines():
        heading = atx_heading_text(line)
        line = " ".join((line if heading is None else heading).split())
        if line:
            out.add(line)
            if len(out) == lines:
                break
    return out


# -- stage 2: embed -------------------------------------------------------------------------


def fail_documents(
    doc_ids: Sequence[str], error: str, *, session_factory: sessionmaker[Session]
) -> None:
    """Mark documents failed with ``error`` and fail their job items (the job of
    their staged chunks, if any)."""
    with session_scope(session_factory) as session:
        for doc_id in doc_ids:
            doc = session.get(Document, doc_id)
            if doc is not None:
                staged = session.get(StagedChunks, doc_id)
                fail_document(session, doc, error, staged.job_id if staged else None)


def mark_document(
    doc_id: str, *, session_factory: sessionmaker[Session], status: str, error: str | None = None
) -> None:
    """Set a document's status and error message (no-op if it is gone)."""
    with session_scope(session_factory) as session:
        doc = session.get(Document, doc_id)
        if doc is not None:
            doc.status = status
            doc.error = error


# -- internals ------------------------------------------------------------------------------


def get_document(session: Session, doc_id: str) -> Document:
    """The document, or ``NotFoundError``."""
    doc = session.get(Document, doc_id)
    if doc is None:
        raise NotFoundError(f"document {doc_id} does not exist")
    return doc


def fail_document(session: Session, doc: Document, error: str, job_id: str | None) -> None:
    """Mark ``doc`` failed, drop its staged chunks, fail its job item."""
    doc.status, doc.error, doc.lease_until = "failed", error, None
    session.execute(delete(StagedChunks).where(StagedChunks.document_id == doc.id))
    if job_id is not None:
        finish_item_in(session, job_id, doc.id, state="failed", error=error)


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None
