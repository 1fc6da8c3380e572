"""The ``Store`` port on Qdrant: a server, or qdrant-client's local mode.

Each chunk is one point with two vectors: ``dense`` (the embedding, cosine)
and ``bm25`` (a sparse BM25 vector, IDF applied by Qdrant: see
``retrieval.sparse``). Hybrid search runs both as prefetches of one Query API
call and fuses them (``retrieval.fusion``: distribution-based score fusion by
default, or reciprocal rank fusion). Every filter, the caller's
tenant and ACL included, is a Qdrant filter: nothing is filtered afterwards.

Collections live behind an alias (``qdrant.collection``, default
``sirocco_chunks``) pointing at ``<alias>__<n>``; a rebuild fills a new
collection and swaps the alias in one atomic operation
(``retrieval.collections``).

Local mode and several processes: ``QdrantClient(path=...)`` takes an exclusive,
non-blocking ``flock`` on ``<path>/.lock`` *after* loading every collection
into memory, holds it until ``close()``, and never sees writes made by another
process after it loaded. So the API (searching) and a Celery worker (upserting)
cannot keep clients open side by side. Here every local operation takes a
blocking cross-process lock on a sibling file (``<path>.lock``), opens a fresh
client, works, closes it (which releases qdrant's own lock) and releases ours.
``hold()`` keeps one client open for many operations (evaluation, benchmarks,
bulk work), blocking other processes meanwhile. A Qdrant server is the answer
for large collections.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from retrieval import collections, local_speedups
from retrieval.collections import (
    DENSE,
    SPARSE,
    check_layout,
    create_collection,
    next_collection_name,
    target_collection,
)
from retrieval.locking import FileLock
from retrieval.qdrant_payload import (
    documents_selector,
    floats,
    hit_of,
    index_text,
    payload,
    qdrant_filter,
)
from retrieval.sparse import SparseEncoder
from retrieval.store import SearchFilter, SearchMode, resolve_mode, search_filter
from sirocco.errors import ConfigError, StoreBusyError, UnavailableError
from sirocco.settings import Settings
from sirocco.types import Chunk, SearchHit

logger = logging.getLogger(__name__)

_UPSERT_BATCH = 256


class QdrantStore:
    """Chunks in one aliased Qdrant collection, searched dense, sparse or hybrid."""

    def __init__(self, settings: Settings, *, collection: str | None = None) -> None:
        q, r = settings.qdrant, settings.retrieval
        self.collection = collection or q.collection
        self.sparse = SparseEncoder(r.sparse_language, avg_len=r.bm25_avg_len)
        self._prefetch = r.prefetch_limit
        self._fusion: qm.Query = (qm.FusionQuery(fusion=qm.Fusion.DBSF) if r.fusion == "dbsf"
                                  else qm.RrfQuery(rrf=qm.Rrf(k=r.rrf_k)))
        self._remote: QdrantClient | None = None
        self._held: QdrantClient | None = None
        self._path: Path | None = None
        if q.url:
            self._remote = QdrantClient(
                url=q.url, api_key=q.api_key, timeout=max(1, math.ceil(q.timeout_s))
            )
        else:
            local_speedups.install()
            self._path = settings.qdrant_path
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(self._path.with_name(self._path.name + ".lock"),
                                  q.lock_timeout_s)

    # -- the Store port ------------------------------------------------------------------

    def ensure_collection(self, dim: int) -> None:
        """Create the collection (behind its alias) and its payload indexes if
        missing; refuse one built for another vector size or layout."""
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
        """Upsert ``chunks``, then delete the other chunks of ``doc_ids`` (chunk
        ids are deterministic: a concurrent search finds every document, with
        its old chunks or its new ones), under one client (in local mode: one
        lock and one load of the store for a whole embedding batch)."""
        points = self.points(chunks, vectors)
        if not points and not doc_ids:
            return
        with self._client() as client:
            if points:
                for target in self._write_targets(client, len(vectors[0])):
                    self.write_points(client, target, points)
            self._delete(client, doc_ids, keep=[str(p.id) for p in points])

    def set_access(self, doc_ids: Sequence[str], *, acl: Sequence[str],
                   tags: Sequence[str]) -> None:
        """Rewrite ``acl`` and ``tags`` on every chunk of ``doc_ids`` in the live
        collection and in one being rebuilt; a missing collection is a no-op."""
        if not doc_ids:
            return
        selector = documents_selector(doc_ids)
        with self._client() as client:
            for name in (target_collection(client, self.collection),
                         collections.building(client, self.collection)):
                if name is not None:
                    client.set_payload(name, payload={"acl": list(acl), "tags": list(tags)},
                                       points=selector, wait=True)

    def search(
        self,
        vector: Sequence[float] | None,
        *,
        top_k: int,
        tenant: str | None = None,
        doc_ids: Sequence[str] | None = None,
        text: str | None = None,
        mode: SearchMode | None = None,
        filter: SearchFilter | None = None,
    ) -> list[SearchHit]:
        """The ``top_k`` best chunks, best first; nothing before the first upsert.
        Hybrid scores are fusion scores (DBSF: a sum of normalised scores; RRF:
        rank-based), not cosine similarities."""
        mode = resolve_mode(vector, text, mode)
        flt = search_filter(filter, tenant=tenant, doc_ids=doc_ids, top_k=top_k)
        if flt is None:
            return []
        query_filter = qdrant_filter(flt)
        with self._client() as client:
            if not self._exists(client):
                return []
            if mode == "dense":
                response = client.query_points(
                    self.collection, query=floats(vector), using=DENSE, limit=top_k,
                    query_filter=query_filter, with_payload=True, with_vectors=False)
            elif mode == "sparse":
                response = client.query_points(
                    self.collection, query=self._sparse_query(text), using=SPARSE,
                    limit=top_k, query_filter=query_filter, with_payload=True,
                    with_vectors=False)
            else:
                depth = max(self._prefetch, top_k)
                response = client.query_points(
                    self.collection,
                    prefetch=[
                        qm.Prefetch(query=floats(vector), using=DENSE, limit=depth,
                                    filter=query_filter),
                        qm.Prefetch(query=self._sparse_query(text), using=SPARSE, limit=depth,
                                    filter=query_filter),
                    ],
                    query=self._fusion,
                    limit=top_k, with_payload=True, with_vectors=False)
        return [hit_of(p) for p in response.points]

    def count(self, *, doc_id: str | None = None) -> int:
        """Stored chunks, of one document when ``doc_id`` is given (exact count)."""
        with self._client() as client:
            if not self._exists(client):
                return 0
            flt = qdrant_filter(SearchFilter(doc_ids=[doc_id])) if doc_id is not None else None
            return client.count(self.collection, count_filter=flt, exact=True).count

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()

    # -- more than the port: bulk work and rebuilds ----------------------------------------

    def begin_rebuild(self, dim: int) -> str:
        """Create the collection a rebuild fills (``<alias>__next``); from now on
        writes go there too. Returns its name; idempotent."""
        with self._client() as client:
            name = collections.building(client, self.collection)
            if name is not None:
                return name
            name = next_collection_name(client, self.collection)
            create_collection(client, name, dim)
            client.update_collection_aliases(change_aliases_operations=[
                qm.CreateAliasOperation(create_alias=qm.CreateAlias(
                    collection_name=name, alias_name=collections.build_alias(self.collection)))])
            logger.info("rebuild started", extra={"alias": self.collection, "building": name})
            return name

    def finish_rebuild(self) -> str | None:
        """Swap the alias to the built collection (see ``retrieval.collections.swap``)."""
        with self._client() as client:
            return collections.swap(client, self.collection)

    def abandon_rebuild(self) -> str | None:
        """Drop the collection being built; the live one is untouched."""
        with self._client() as client:
            return collections.abandon(client, self.collection)

    def index_status(self) -> dict[str, Any]:
        """The live collection, the one being built (if any), and their point counts."""
        with self._client() as client:
            live = target_collection(client, self.collection)
            build = collections.building(client, self.collection)
            return {
                "alias": self.collection, "live": live, "building": build,
                "live_points": client.count(live, exact=True).count if live else 0,
                "building_points": client.count(build, exact=True).count if build else 0,
            }

    @contextmanager
    def hold(self) -> Iterator[QdrantStore]:
        """Keep one client open for the operations inside the block (local mode:
        other processes wait until it ends). Nested holds share it."""
        if self._remote is not None or self._held is not None:
            yield self
            return
        with self._client() as client:
            self._held = client
            try:
                yield self
            finally:
                self._held = None

    @property
    def held_client(self) -> QdrantClient:
        """The client of the current ``hold()`` (or the server client), for tools
        that talk to the same collection (benchmarks comparing with a peer)."""
        client = self._remote or self._held
        if client is None:
            raise RuntimeError("held_client is only available inside hold()")
        return client

    def points(
        self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]
    ) -> list[qm.PointStruct]:
        """Qdrant points (dense + BM25 vectors, payload) for chunks."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        out = []
        for c, v in zip(chunks, vectors, strict=True):
            indices, values = self.sparse.encode_document(index_text(c))
            out.append(qm.PointStruct(
                id=c.id, payload=payload(c),
                vector={DENSE: floats(v),
                        SPARSE: qm.SparseVector(indices=indices, values=values)}))
        return out

    @staticmethod
    def write_points(client: QdrantClient, collection: str,
                     points: Sequence[qm.PointStruct]) -> None:
        for i in range(0, len(points), _UPSERT_BATCH):
            client.upsert(collection, points=points[i : i + _UPSERT_BATCH], wait=True)

    @contextmanager
    def _client(self) -> Iterator[QdrantClient]:
        """A client for one operation, with transport failures mapped to
        ``UnavailableError`` (retried by the worker)."""
        try:
            if self._remote is not None or self._held is not None:
                yield self._remote or self._held  # type: ignore[misc]
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

    def _sparse_query(self, text: str | None) -> qm.SparseVector:
        indices, values = self.sparse.encode_query(text or "")
        return qm.SparseVector(indices=indices, values=values)

    def _exists(self, client: QdrantClient) -> bool:
        return target_collection(client, self.collection) is not None

    def _delete(self, client: QdrantClient, doc_ids: Sequence[str],
                keep: Sequence[str] = ()) -> None:
        if not doc_ids:
            return
        selector = documents_selector(doc_ids, keep)
        for name in (target_collection(client, self.collection),
                     collections.building(client, self.collection)):
            if name is not None:
                client.delete(name, points_selector=selector, wait=True)

    def _write_targets(self, client: QdrantClient, dim: int) -> list[str]:
        """Where new points go: the live collection (created if missing) and, during
        a rebuild, the one being built; each only if built for ``dim``."""
        build = collections.building(client, self.collection)
        if build is None:
            self._ensure(client, dim)
            return [self.collection]
        out = [build] if collections.vector_size(client, build) == dim else []
        live = target_collection(client, self.collection)
        if live is not None and collections.vector_size(client, live) == dim:
            out.append(live)
        if not out:
            raise ConfigError(f"the index being built ({build}) expects other vectors than the "
                              f"embedder makes ({dim} dimensions); abandon it with "
                              "`sirocco index abandon`")
        return out

    def _ensure(self, client: QdrantClient, dim: int) -> None:
        target = target_collection(client, self.collection)
        if target is not None:
            check_layout(client, target, dim, alias=self.collection)
            return
        name = next_collection_name(client, self.collection)
        create_collection(client, name, dim)
        client.update_collection_aliases(change_aliases_operations=[
            qm.CreateAliasOperation(create_alias=qm.CreateAlias(
                collection_name=name, alias_name=self.collection))])
        logger.info("created collection", extra={"collection": name, "alias": self.collection,
                                                 "dim": dim})

