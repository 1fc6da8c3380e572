"""Ingestion logic, callable without a broker: register files, ingest one document.

The Celery task (``workers.tasks``) and the API only call into here.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ingest.chunker import chunk_document
from ingest.embedder import Embedder
from ingest.models import Document
from ingest.parsers import SUPPORTED_EXTENSIONS, parse_bytes
from retrieval.store import Store
from sirocco.db import session_scope
from sirocco.errors import InvalidInputError, NotFoundError, ParseError
from sirocco.settings import Settings

logger = logging.getLogger(__name__)

_HASH_BLOCK = 1 << 20


def register_files(
    paths: Iterable[str | Path],
    *,
    session: Session,
    tenant: str = "default",
    force: bool = False,
) -> list[Document]:
    """Create or update one ``Document`` per file and return those to enqueue.

    Folders are walked recursively; hidden files and folders, and files without a
    supported extension, are skipped there (a file named explicitly is always
    taken). A file already registered with the same content hash is skipped
    unless its last ingestion failed or ``force`` is set; a changed file is
    re-queued. The rows are flushed, not committed: commit, then enqueue.
    Raises ``NotFoundError`` for a path that does not exist.
    """
    to_enqueue: list[Document] = []
    for path in iter_files(paths):
        digest = file_sha256(path)
        source = str(path)
        doc = session.scalar(
            select(Document).where(Document.tenant == tenant, Document.source_path == source)
        )
        if doc is None:
            doc = Document(tenant=tenant, source_path=source, title=path.stem)
            session.add(doc)
        elif not force and doc.content_hash == digest and doc.status != "failed":
            logger.debug("unchanged, skipped", extra={"path": source, "doc_id": doc.id})
            continue
        doc.content_hash = digest
        doc.status = "queued"
        doc.error = None
        doc.attempts = 0
        to_enqueue.append(doc)
    session.flush()
    return to_enqueue


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Absolute file paths, each once, folders walked in sorted order."""
    seen: set[Path] = set()
    for raw in paths:
        root = Path(raw).expanduser().resolve()
        if not root.exists():
            raise NotFoundError(f"{raw}: no such file or folder")
        if root.is_file():
            candidates: Iterable[Path] = [root]
        else:
            candidates = _walk(root)
        for path in candidates:
            if path not in seen:
                seen.add(path)
                yield path


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder, name)
            if name.startswith("."):
                continue
            if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                logger.debug("unsupported extension, skipped", extra={"path": str(path)})
                continue
            if path.is_file():
                yield path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def ingest_document(
    doc_id: str,
    *,
    session_factory: sessionmaker[Session],
    embedder: Embedder,
    store: Store,
    settings: Settings,
) -> int:
    """Parse, chunk, embed and store one registered document; returns its chunk count.

    Idempotent: the document's old chunks are deleted before the new ones are
    written under deterministic ids. A file we cannot read (``ParseError``,
    ``InvalidInputError``) marks the document failed with the message and returns 0;
    transient errors (``UnavailableError`` ...) propagate for the caller to retry.
    Raises ``NotFoundError`` when no such document exists.
    """
    max_attempts = settings.celery.max_retries + 1
    with session_scope(session_factory) as session:
        doc = session.get(Document, doc_id)
        if doc is None:
            raise NotFoundError(f"document {doc_id} does not exist")
        if doc.attempts >= max_attempts:
            # Earlier tries never finished: the worker died on this document.
            doc.status = "failed"
            doc.error = (
                f"gave up after {doc.attempts} attempts that did not finish "
                "(the worker was killed, out of memory or over the time limit?)"
            )
            logger.warning("giving up", extra={"doc_id": doc_id, "attempts": doc.attempts})
            return 0
        doc.attempts += 1
        doc.status = "running"
        doc.error = None
        source, tenant = doc.source_path, doc.tenant

    try:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ParseError(f"{source}: cannot read file ({exc.strerror or exc})") from None
        parsed = parse_bytes(data, name=source)
        chunk_tokens, overlap_tokens = chunk_sizes(settings, embedder)
        chunks = chunk_document(
            parsed,
            doc_id=doc_id,
            source=source,
            tenant=tenant,
            tokenizer=getattr(embedder, "tokenizer", None),
            chunk_tokens=chunk_tokens,
            overlap_tokens=overlap_tokens,
        )
    except (ParseError, InvalidInputError) as exc:
        mark_document(doc_id, session_factory=session_factory, status="failed", error=exc.message)
        logger.info("ingestion failed", extra={"doc_id": doc_id, "error": exc.message})
        return 0

    vectors = embed_in_batches(embedder, [c.text for c in chunks], settings.embedding.batch_size)
    store.delete_document(doc_id)
    store.upsert(chunks, vectors)

    with session_scope(session_factory) as session:
        doc = session.get(Document, doc_id)
        if doc is None:  # deleted while we worked: do not leave orphan chunks
            store.delete_document(doc_id)
            raise NotFoundError(f"document {doc_id} was deleted during ingestion")
        doc.status = "done"
        doc.error = None
        doc.title = parsed.title
        doc.mime_type = parsed.mime_type
        doc.content_hash = hashlib.sha256(data).hexdigest()
        doc.chunk_count = len(chunks)
        doc.attempts = 0
    logger.info("ingested", extra={"doc_id": doc_id, "chunks": len(chunks), "source": source})
    return len(chunks)


def mark_document(
    doc_id: str, *, session_factory: sessionmaker[Session], status: str, error: str | None = None
) -> None:
    """Set a document's status and error message (no-op if it is gone)."""
    with session_scope(session_factory) as session:
        doc = session.get(Document, doc_id)
        if doc is not None:
            doc.status = status
            doc.error = error


def chunk_sizes(settings: Settings, embedder: Any) -> tuple[int, int]:
    """Chunk and overlap sizes from settings, shrunk so a chunk plus the model's
    two special tokens fits its ``max_seq_length`` (the rest would be cut off)."""
    chunk = settings.chunking.chunk_tokens
    limit = getattr(embedder, "max_seq_length", None)
    if isinstance(limit, int) and chunk > limit - 2:
        logger.warning(
            "chunk_tokens exceeds the embedding model's input; using its limit",
            extra={"chunk_tokens": chunk, "max_seq_length": limit},
        )
        chunk = max(1, limit - 2)
    overlap = min(settings.chunking.overlap_tokens, chunk // 2)
    return chunk, overlap


def embed_in_batches(
    embedder: Embedder, texts: Sequence[str], batch_size: int
) -> list[list[float]]:
    """Vectors for ``texts`` in order, asking the embedder for ``batch_size`` at a time."""
    step = max(1, batch_size)
    vectors: list[list[float]] = []
    for i in range(0, len(texts), step):
        vectors.extend(embedder.embed_documents(texts[i : i + step]))
    return vectors
