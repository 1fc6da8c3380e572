"""The embedded store's engine: qdrant-edge shards behind an alias, in the
process that owns them (``retrieval.edge_store`` elects it).

A folder per alias holds versioned shards (``<alias>__<n>``, one qdrant-edge
shard each: segments with HNSW and payload indexes on disk, a WAL) and
``pointer.json``, written atomically, naming the live shard and the one a
rebuild fills. Swapping the alias is rewriting the pointer, then deleting the
old shard's folder; a crash between the two (or while creating a shard)
leaves an orphan folder, which the next owner deletes when it opens the
folder (only the pointer's shards are kept).

Reads never wait for writes: queries take the structure lock shared (a
counter, not a mutex around the search), updates take a writer mutex and the
lock shared, so only opening, swapping or dropping a shard waits for the
queries in flight. The shards index in the background (``optimize``) after
writes, so segments turn into HNSW-indexed ones as the corpus grows.

Everything here speaks JSON (``retrieval.edge_points``) so the owner can
serve other processes the same calls over a socket.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from retrieval.collections import DENSE, SPARSE
from retrieval.edge_points import dense_rows, documents_filter, edge_filter, edge_point
from sirocco.errors import ConfigError
from sirocco.files import read_json, write_json_atomic

logger = logging.getLogger(__name__)

_KEYWORD_INDEXES = ("doc_id", "tenant", "acl", "source_id", "mime_type", "tags")
_UPSERT_BATCH = 256
POINTER = "pointer.json"


class RWLock:
    """Many readers or one writer; readers only count themselves in."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._writer = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class EdgeEngine:
    """The shards of one alias, open in this process (the owner)."""

    def __init__(self, root: Path, alias: str, *, prefetch: int, fusion: str,
                 rrf_k: int) -> None:
        self.root, self.alias = root, alias
        self._prefetch = prefetch
        self._fusion: Any = qe.Fusion.Dbsf() if fusion == "dbsf" else qe.Fusion.Rrf(k=rrf_k)
        self._lock = RWLock()
        self._write = threading.Lock()
        self._shards: dict[str, qe.EdgeShard] = {}
        self._dims: dict[str, int] = {}
        root.mkdir(parents=True, exist_ok=True)
        pointer = read_json(root / POINTER) or {}
        self._live: str | None = pointer.get("live")
        self._building: str | None = pointer.get("building")
        for role in ("live", "building"):
            name = pointer.get(role)
            if name:
                self._shards[name] = qe.EdgeShard.load(str(root / name))
                self._dims[name] = int(pointer[f"{role}_dim"])
        for orphan in root.glob(f"{alias}__*"):
            if orphan.is_dir() and orphan.name not in self._shards:
                shutil.rmtree(orphan, ignore_errors=True)
        self._dirty = threading.Event()
        self._opt = threading.Lock()  # taken by the optimizer, and before closing a shard
        self._closed = False
        self._optimizer = threading.Thread(target=self._optimize_loop, daemon=True,
                                           name=f"edge-optimize-{alias}")
        self._optimizer.start()

    # -- reads ------------------------------------------------------------------------

    def query(self, *, mode: str, dense: list[float] | None,
              sparse: list[list[Any]] | None, spec: dict[str, Any] | None,
              top_k: int) -> list[dict[str, Any]]:
        """The ``top_k`` best points of the live shard as ``{id, score, payload}``."""
        flt = edge_filter(spec)
        dense_q = qe.Query.Nearest(dense or [], using=DENSE)
        sparse_q = qe.Query.Nearest(
            qe.SparseVector(indices=list((sparse or [[], []])[0]),
                            values=list((sparse or [[], []])[1])), using=SPARSE)
        if mode == "dense":
            request = qe.QueryRequest(limit=top_k, query=dense_q, filter=flt,
                                      with_payload=True, with_vector=False)
        elif mode == "sparse":
            request = qe.QueryRequest(limit=top_k, query=sparse_q, filter=flt,
                                      with_payload=True, with_vector=False)
        else:
            depth = max(self._prefetch, top_k)
            request = qe.QueryRequest(
                limit=top_k, query=self._fusion, with_payload=True, with_vector=False,
                prefetches=[qe.Prefetch(limit=depth, query=dense_q, filter=flt),
                            qe.Prefetch(limit=depth, query=sparse_q, filter=flt)])
        with self._lock.shared():
            if self._live is None:
                return []
            points = self._shards[self._live].query(request)
        return [{"id": str(p.id), "score": float(p.score), "payload": p.payload or {}}
                for p in points]

    def count(self, *, doc_id: str | None = None) -> int:
        """Points in the live shard (of one document when ``doc_id`` is given)."""
        flt = documents_filter([doc_id]) if doc_id is not None else None
        with self._lock.shared():
            return self._count(self._live, flt)

    def index_status(self) -> dict[str, Any]:
        with self._lock.shared():
            return {"alias": self.alias, "live": self._live, "building": self._building,
                    "live_points": self._count(self._live),
                    "building_points": self._count(self._building)}

    # -- writes -----------------------------------------------------------------------

    def ensure(self, *, dim: int) -> None:
        """Create the live shard if missing; refuse one of another vector size."""
        with self._write:
            self._ensure(dim)

    def write(self, *, doc_ids: list[str], points: list[dict[str, Any]],
              dim: int | None, dense: bytes = b"") -> None:
        """Replace the points of ``doc_ids`` with ``points`` whose dense
        vectors are ``dense`` (``edge_points.point_dicts``; upserted first,
        then the documents' other points deleted), in the live shard and in
        one being built (each only if built for ``dim``)."""
        vectors = dense_rows(dense, len(points), dim or 0) if points else []
        with self._write:
            if points:
                assert dim is not None
                targets = self._write_targets(dim)
            else:
                targets = [n for n in (self._live, self._building) if n is not None]
            with self._lock.shared():
                for name in targets:
                    shard = self._shards[name]
                    # New points first (chunk ids are deterministic, so a
                    # document's unchanged positions are overwritten), then
                    # what the documents no longer have: a concurrent query
                    # never finds a document without its chunks.
                    for i in range(0, len(points), _UPSERT_BATCH):
                        shard.update(qe.UpdateOperation.upsert_points(
                            [edge_point(p, v, DENSE, SPARSE) for p, v in
                             zip(points[i: i + _UPSERT_BATCH],
                                 vectors[i: i + _UPSERT_BATCH], strict=True)]))
                    if doc_ids:
                        shard.update(qe.UpdateOperation.delete_points_by_filter(
                            documents_filter(doc_ids, [p["id"] for p in points])))
        if points:
            self._dirty.set()

    def set_access(self, *, doc_ids: list[str], acl: list[str], tags: list[str]) -> None:
        """Rewrite ``acl`` and ``tags`` of every point of ``doc_ids``."""
        with self._write, self._lock.shared():
            for name in (self._live, self._building):
                if name is not None:
                    self._shards[name].update(qe.UpdateOperation.set_payload_by_filter(
                        documents_filter(doc_ids), {"acl": acl, "tags": tags}))

    def begin_rebuild(self, *, dim: int) -> str:
        with self._write:
            if self._building is not None:
                return self._building
            name = self._create(dim)
            with self._lock.exclusive():
                self._building = name
                self._save_pointer()
            logger.info("rebuild started", extra={"alias": self.alias, "building": name})
            return name

    def finish_rebuild(self) -> str | None:
        with self._write:
            new, old = self._building, self._live
            if new is None:
                return None
            with self._opt, self._lock.exclusive():
                self._live, self._building = new, None
                self._save_pointer()
                self._drop(old)
            logger.info("index swapped", extra={"alias": self.alias, "live": new,
                                                "dropped": old})
            return new

    def abandon_rebuild(self) -> str | None:
        with self._write:
            name = self._building
            if name is None:
                return None
            with self._opt, self._lock.exclusive():
                self._building = None
                self._save_pointer()
                self._drop(name)
            return name

    def optimize(self) -> None:
        """Index what was written now, waiting for it (bulk loads, benchmarks);
        otherwise the background optimizer does it once writes pause."""
        with self._opt:
            for shard in list(self._shards.values()):
                shard.optimize()

    def close(self) -> None:
        """Flush and close every shard (the WAL lock goes with them)."""
        self._closed = True
        self._dirty.set()
        with self._write, self._opt, self._lock.exclusive():
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
            self._live = self._building = None

    # -- inside ------------------------------------------------------------------------

    def _count(self, name: str | None, flt: qe.Filter | None = None) -> int:
        if name is None:
            return 0
        return int(self._shards[name].count(qe.CountRequest(exact=True, filter=flt)))

    def _ensure(self, dim: int) -> None:
        if self._live is not None:
            if self._dims[self._live] != dim:
                raise ConfigError(
                    f"collection {self._live!r} holds {self._dims[self._live]}-dimensional "
                    f"vectors but the embedder makes {dim}; rebuild the index after changing "
                    "the embedding model (`sirocco index rebuild`)")
            return
        name = self._create(dim)
        with self._lock.exclusive():
            self._live = name
            self._save_pointer()
        logger.info("created collection", extra={"collection": name, "alias": self.alias,
                                                 "dim": dim})

    def _write_targets(self, dim: int) -> list[str]:
        if self._building is None:
            self._ensure(dim)
            assert self._live is not None
            return [self._live]
        out = [n for n in (self._building, self._live)
               if n is not None and self._dims[n] == dim]
        if not out:
            raise ConfigError(f"the index being built ({self._building}) expects other vectors "
                              f"than the embedder makes ({dim} dimensions); abandon it with "
                              "`sirocco index abandon`")
        return out

    def _create(self, dim: int) -> str:
        """A new empty shard ``<alias>__<n>`` with Sirocco's layout and indexes."""
        taken = [p.name.rsplit("__", 1)[1] for p in self.root.glob(f"{self.alias}__*")]
        n = max((int(t) for t in taken if t.isdigit()), default=0) + 1
        name = f"{self.alias}__{n}"
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)})
        shard = qe.EdgeShard.create(str(self.root / name), config)
        for field in _KEYWORD_INDEXES:
            shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
        shard.update(qe.UpdateOperation.create_field_index("modified_at",
                                                           qe.PayloadSchemaType.Float))
        self._shards[name] = shard
        self._dims[name] = dim
        return name

    def _drop(self, name: str | None) -> None:
        if name is None:
            return
        shard = self._shards.pop(name, None)
        self._dims.pop(name, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self.root / name, ignore_errors=True)

    def _save_pointer(self) -> None:
        write_json_atomic(self.root / POINTER, {
            "live": self._live, "building": self._building,
            "live_dim": self._dims.get(self._live) if self._live else None,
            "building_dim": self._dims.get(self._building) if self._building else None})

    def _optimize_loop(self) -> None:
        """Index what was written, once writes pause for a second. Holds only
        ``_opt`` (never the structure lock): queries go on meanwhile."""
        while True:
            self._dirty.wait()
            while not self._closed and self._dirty.is_set():
                self._dirty.clear()
                self._dirty.wait(timeout=1.0)
            with self._opt:
                if self._closed:
                    return
                for shard in list(self._shards.values()):
                    try:
                        shard.optimize()
                    except Exception:  # noqa: BLE001 - indexing again later is enough
                        logger.exception("edge shard optimisation failed")
