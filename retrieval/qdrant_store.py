"""The ``Store`` port on Qdrant: a server, or qdrant-client's local mode.

Local mode and several processes: ``QdrantClient(path=...)`` takes an exclusive,
non-blocking ``flock`` on ``<path>/.lock`` *after* loading every collection
into memory, holds it until ``close()``, and never sees writes made by another
process after it loaded. So the API (searching) and a Celery worker (upserting)
cannot keep clients open side by side. Here every local operation takes a
blocking cross-process lock on a sibling file (``<path>.lock``), opens a fresh
client, works, closes it (which releases qdrant's own lock) and releases ours.
Each operation therefore reloads the store from disk: fine for the embedded
default, while a Qdrant server is the answer for large collections.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from sirocco.errors import ConfigError, StoreBusyError, UnavailableError
from sirocco.settings import Settings
from sirocco.types import Chunk, SearchHit

logger = logging.getLogger(__name__)

_UPSERT_BATCH = 256
_KEYWORD_INDEXES = ("doc_id", "tenant")


class QdrantStore:
    """Chunks in one Qdrant collection (cosine distance), filtered inside Qdrant."""

    def __init__(self, settings: Settings, *, collection: str | None = None) -> None:
        q = settings.qdrant
        self.collection = collection or q.collection
        self._remote: QdrantClient | None = None
        self._path: Path | None = None
        if q.url:
            self._remote = QdrantClient(
                url=q.url, api_key=q.api_key, timeout=max(1, math.ceil(q.timeout_s))
            )
        else:
            self._path = settings.qdrant_path
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = _FileLock(
                self._path.with_name(self._path.name + ".lock"), q.lock_timeout_s
            )

    # -- the Store port ------------------------------------------------------------------

    def ensure_collection(self, dim: int) -> None:
        """Create the collection and its keyword indexes if missing; refuse a
        collection built for another vector size."""
        with self._client() as client:
            self._ensure(client, dim)

    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        """Write chunks under their deterministic ids (``Chunk.id``); the collection
        is created on first use."""
        self.replace_documents((), chunks, vectors)

    def delete_document(self, doc_id: str) -> None:
        """Remove every chunk of ``doc_id``; a missing collection is a no-op."""
        with self._client() as client:
            self._delete(client, [doc_id])

    def replace_documents(
        self, doc_ids: Sequence[str], chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]
    ) -> None:
        """Delete the chunks of ``doc_ids``, then upsert ``chunks``, under one
        client (in local mode: one lock and one load of the store for a whole
        embedding batch)."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        points = [
            qm.PointStruct(id=c.id, vector=list(map(float, v)), payload=_payload(c))
            for c, v in zip(chunks, vectors, strict=True)
        ]
        if not points and not doc_ids:
            return
        with self._client() as client:
            self._delete(client, doc_ids)
            if not points:
                return
            self._ensure(client, len(points[0].vector))  # type: ignore[arg-type]
            for i in range(0, len(points), _UPSERT_BATCH):
                client.upsert(self.collection, points=points[i : i + _UPSERT_BATCH], wait=True)

    def search(
        self,
        vector: Sequence[float],
        *,
        top_k: int,
        tenant: str | None = None,
        doc_ids: Sequence[str] | None = None,
    ) -> list[SearchHit]:
        """The ``top_k`` nearest chunks, best first; nothing before the first upsert."""
        if top_k <= 0 or (doc_ids is not None and not doc_ids):
            return []
        with self._client() as client:
            if not client.collection_exists(self.collection):
                return []
            response = client.query_points(
                self.collection,
                query=list(map(float, vector)),
                limit=top_k,
                query_filter=_filter(tenant=tenant, doc_ids=doc_ids),
                with_payload=True,
                with_vectors=False,
            )
        return [_hit(p) for p in response.points]

    def count(self, *, doc_id: str | None = None) -> int:
        """Stored chunks, of one document when ``doc_id`` is given (exact count)."""
        with self._client() as client:
            if not client.collection_exists(self.collection):
                return 0
            flt = _filter(doc_ids=[doc_id]) if doc_id is not None else None
            return client.count(self.collection, count_filter=flt, exact=True).count

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()

    # -- internals -----------------------------------------------------------------------

    @contextmanager
    def _client(self) -> Iterator[QdrantClient]:
        """A client for one operation, with transport failures mapped to
        ``UnavailableError`` (retried by the worker)."""
        try:
            if self._remote is not None:
                yield self._remote
                return
            assert self._path is not None
            with self._lock:
                try:
                    client = QdrantClient(path=str(self._path))
                except RuntimeError as exc:
                    if "already accessed" not in str(exc):
                        raise
                    # Someone outside Sirocco (a notebook?) holds qdrant's own lock.
                    raise StoreBusyError(
                        f"the embedded vector store {self._path} is open in another program "
                        "that does not use Sirocco's lock; close it or use a Qdrant server"
                    ) from None
                try:
                    yield client
                finally:
                    client.close()
        except ResponseHandlingException as exc:
            raise UnavailableError(f"Qdrant is unreachable: {exc}") from exc
        except UnexpectedResponse as exc:
            if exc.status_code is not None and (exc.status_code >= 500 or exc.status_code == 429):
                raise UnavailableError(f"Qdrant answered {exc.status_code}: {exc}") from exc
            raise

    def _delete(self, client: QdrantClient, doc_ids: Sequence[str]) -> None:
        if doc_ids and client.collection_exists(self.collection):
            client.delete(
                self.collection,
                points_selector=qm.FilterSelector(filter=_filter(doc_ids=doc_ids)),
                wait=True,
            )

    def _ensure(self, client: QdrantClient, dim: int) -> None:
        if client.collection_exists(self.collection):
            info = client.get_collection(self.collection)
            size = _vector_size(info.config.params.vectors)
            if size is not None and size != dim:
                raise ConfigError(
                    f"collection {self.collection!r} holds {size}-dimensional vectors but the "
                    f"embedder makes {dim}; re-embed into a new collection "
                    "(SIROCCO_QDRANT__COLLECTION) after changing the embedding model"
                )
            return
        client.create_collection(
            self.collection,
            vectors_config=qm.VectorParams(size=dim, distance=qm.Distance.COSINE),
        )
        # Local mode ignores payload indexes (and warns once); a server needs them
        # for fast tenant / document filters.
        for field in _KEYWORD_INDEXES:
            client.create_payload_index(
                self.collection, field_name=field, field_schema=qm.PayloadSchemaType.KEYWORD
            )
        logger.info("created collection", extra={"collection": self.collection, "dim": dim})


def _vector_size(vectors: Any) -> int | None:
    if isinstance(vectors, qm.VectorParams):
        return vectors.size
    return None


def _payload(c: Chunk) -> dict[str, Any]:
    return {
        "doc_id": c.doc_id,
        "chunk_index": c.chunk_index,
        "text": c.text,
        "title": c.title,
        "source": c.source,
        "page": c.page,
        "headings": list(c.headings),
        "start_char": c.start_char,
        "end_char": c.end_char,
        "tenant": c.tenant,
    }


def _filter(*, tenant: str | None = None, doc_ids: Sequence[str] | None = None) -> qm.Filter | None:
    must: list[qm.Condition] = []
    if tenant is not None:
        must.append(qm.FieldCondition(key="tenant", match=qm.MatchValue(value=tenant)))
    if doc_ids is not None:
        must.append(qm.FieldCondition(key="doc_id", match=qm.MatchAny(any=list(doc_ids))))
    return qm.Filter(must=must) if must else None


def _hit(point: qm.ScoredPoint) -> SearchHit:
    p = point.payload or {}
    return SearchHit(
        chunk_id=str(point.id),
        doc_id=p["doc_id"],
        chunk_index=int(p["chunk_index"]),
        text=p.get("text", ""),
        title=p.get("title", ""),
        source=p.get("source", ""),
        score=float(point.score),
        start_char=int(p.get("start_char", 0)),
        end_char=int(p.get("end_char", 0)),
        page=p.get("page"),
        headings=tuple(p.get("headings") or ()),
    )


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(str(path), threading.Lock())


def _forget_thread_locks_after_fork() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    global _thread_locks_guard
    _thread_locks_guard = threading.Lock()
    _thread_locks.clear()


os.register_at_fork(after_in_child=_forget_thread_locks_after_fork)


class _FileLock:
    """An exclusive lock across processes (``flock`` on ``path``) and threads,
    waiting at most ``timeout_s``, then raising ``StoreBusyError``.

    flock already conflicts between two descriptors of one process; the thread
    lock in front only spares threads from polling each other."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._held = threading.local()

    def __enter__(self) -> _FileLock:
        deadline = time.monotonic() + self.timeout_s
        tlock = _thread_lock(self.path)
        if not tlock.acquire(timeout=max(0.0, self.timeout_s)):
            raise self._busy()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        raise self._busy() from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
        except BaseException:
            tlock.release()
            raise
        self._held.state = (fd, tlock)
        return self

    def __exit__(self, *exc: object) -> None:
        fd, tlock = self._held.state
        self._held.state = None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            tlock.release()

    def _busy(self) -> StoreBusyError:
        return StoreBusyError(
            f"the embedded vector store stayed locked by another process for "
            f"{self.timeout_s:g}s (lock file {self.path}); retry later, raise "
            "SIROCCO_QDRANT__LOCK_TIMEOUT_S, or use a Qdrant server (SIROCCO_QDRANT_URL)"
        )
