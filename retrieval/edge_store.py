"""The ``Store`` port on qdrant-edge, the embedded default (``qdrant.engine: edge``).

qdrant-edge is Qdrant's own engine in-process: segments with HNSW and payload
indexes on disk, sparse vectors with IDF, prefetch + RRF/DBSF fusion. A query
reads the index; nothing loads the collection into Python, so query time
grows with the index's depth, not with the corpus (``bench/store_scale.py``).
Points, payloads, filters and fusion are those of the server adapter
(``retrieval.qdrant_store``), so results match.

One process at a time can open a shard (its WAL is locked). So per store folder
(``<qdrant path>/edge/<alias>``) one *owner* process holds the shards: the
first to take ``owner.lock`` (a non-blocking ``flock``) opens them
(``retrieval.edge_engine``) and serves every other process over a Unix socket
(``retrieval.edge_rpc``). The others are clients. Reads are never serialised:
the owner answers each connection on its own thread and its engine only
serialises writes. When the owner closes its store or dies (the kernel drops
its lock and the socket hangs up), the next client to notice takes the lock,
opens the shards (the WAL replays what was acknowledged) and retries its call.
Calls are idempotent (deterministic ids), so a retried write is harmless.

Within one process, stores of the same folder share one owner or client.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from retrieval.edge_engine import EdgeEngine
from retrieval.edge_points import filter_spec, point_dicts
from retrieval.edge_rpc import Client, OwnerGone, Server
from retrieval.qdrant_payload import floats, hit_from
from retrieval.sparse import SparseEncoder
from retrieval.store import SearchFilter, SearchMode, resolve_mode, search_filter
from sirocco.errors import StoreBusyError
from sirocco.settings import Settings
from sirocco.types import Chunk, SearchHit

_SOCKET_MAX = 100  # sun_path holds 108 bytes


class _Role:
    """This process's side of one store folder: the owner (engine + server +
    lock) or a client. Shared by every ``EdgeStore`` of the folder."""

    def __init__(self, root: Path, alias: str, engine_args: dict[str, Any],
                 timeout_s: float) -> None:
        self.root, self.alias, self.engine_args = root, alias, engine_args
        self.timeout_s = timeout_s
        self.pid = os.getpid()
        self.guard = threading.Lock()
        self.engine: EdgeEngine | None = None
        self.server: Server | None = None
        self.client: Client | None = None
        self.lock_fd: int | None = None
        self.users = 0
        digest = hashlib.sha1(str(root).encode()).hexdigest()[:16]
        sock = root / "owner.sock"
        self.socket = sock if len(str(sock)) <= _SOCKET_MAX else (
            Path(tempfile.gettempdir()) / f"sirocco-{os.getuid()}" / f"{digest}.sock")

    def backend(self) -> EdgeEngine | Client | None:
        """The engine (owner), a client, or None when the owner is starting or
        gone and its lock still held (try again shortly)."""
        with self.guard:
            if self.engine is not None:
                return self.engine
            if self.client is not None:
                return self.client
            if self._try_own():
                return self.engine
            client = Client(self.socket, self.timeout_s)
            try:
                client.call("index_status")
            except OwnerGone:
                return None
            self.client = client
            return client

    def lost_owner(self, client: Client) -> None:
        with self.guard:
            if self.client is client:
                client.close()
                self.client = None

    def close(self) -> None:
        with self.guard:
            if self.server is not None:
                self.server.close()
            if self.engine is not None:
                self.engine.close()
            if self.client is not None:
                self.client.close()
            if self.lock_fd is not None:
                os.close(self.lock_fd)  # the last step: the shards are closed
            self.server = self.engine = self.client = None
            self.lock_fd = None

    def _try_own(self) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "owner.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            self.engine = EdgeEngine(self.root, self.alias, **self.engine_args)
            self.socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.server = Server(self.engine, self.socket)
        except BaseException:
            if self.engine is not None:
                self.engine.close()
            self.engine = None
            os.close(fd)
            raise
        self.lock_fd = fd
        return True


_roles: dict[Path, _Role] = {}
_roles_guard = threading.Lock()


def _role(root: Path, alias: str, engine_args: dict[str, Any], timeout_s: float) -> _Role:
    with _roles_guard:
        role = _roles.get(root)
        if role is None or role.pid != os.getpid():
            # A forked child inherits neither the parent's threads nor its ownership.
            role = _roles[root] = _Role(root, alias, engine_args, timeout_s)
        role.users += 1
        return role


def _forget_after_fork() -> None:
    """A forked child owns nothing: drop its copy of the owner lock (the parent
    keeps the lock through its own descriptor) and start afresh."""
    for role in _roles.values():
        if role.lock_fd is not None:
            os.close(role.lock_fd)
            role.lock_fd = None
    _roles.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


class EdgeStore:
    """Chunks in qdrant-edge shards behind an alias, searched dense, sparse or hybrid."""

    def __init__(self, settings: Settings, *, collection: str | None = None) -> None:
        q, r = settings.qdrant, settings.retrieval
        self.collection = collection or q.collection
        self.sparse = SparseEncoder(r.sparse_language, avg_len=r.bm25_avg_len)
        self.root = settings.qdrant_path / "edge" / self.collection
        self._timeout_s = q.lock_timeout_s
        self._engine_args = {"prefetch": r.prefetch_limit, "fusion": r.fusion,
                             "rrf_k": r.rrf_k}
        self._role: _Role | None = None

    # -- the Store port ------------------------------------------------------------------

    def ensure_collection(self, dim: int) -> None:
        self._call("ensure", dim=dim)

    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        self.replace_documents((), chunks, vectors)

    def delete_document(self, doc_id: str) -> None:
        self._call("write", doc_ids=[doc_id], points=[], dim=None)

    def replace_documents(
        self, doc_ids: Sequence[str], chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]
    ) -> None:
        points, dense = point_dicts(self.sparse, chunks, vectors)
        if not points and not doc_ids:
            return
        self._call("write", doc_ids=list(doc_ids), points=points,
                   dim=len(vectors[0]) if points else None, dense=dense)

    def set_access(self, doc_ids: Sequence[str], *, acl: Sequence[str],
                   tags: Sequence[str]) -> None:
        if doc_ids:
            self._call("set_access", doc_ids=list(doc_ids), acl=list(acl), tags=list(tags))

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
        """As ``QdrantStore.search``: filtered inside the engine, best first."""
        mode = resolve_mode(vector, text, mode)
        flt = search_filter(filter, tenant=tenant, doc_ids=doc_ids, top_k=top_k)
        if flt is None:
            return []
        sparse = list(self.sparse.encode_query(text or "")) if mode != "dense" else None
        found = self._call("query", mode=mode,
                           dense=floats(vector) if mode != "sparse" else None,
                           sparse=sparse, spec=filter_spec(flt), top_k=top_k)
        return [hit_from(p["id"], p["score"], p["payload"]) for p in found]

    def count(self, *, doc_id: str | None = None) -> int:
        return int(self._call("count", doc_id=doc_id))

    def begin_rebuild(self, dim: int) -> str:
        return str(self._call("begin_rebuild", dim=dim))

    def finish_rebuild(self) -> str | None:
        return self._call("finish_rebuild")

    def abandon_rebuild(self) -> str | None:
        return self._call("abandon_rebuild")

    def index_status(self) -> dict[str, Any]:
        return dict(self._call("index_status"))

    def optimize(self) -> None:
        """Build the HNSW and payload indexes of what was written, now (the owner
        otherwise does it in the background once writes pause)."""
        self._call("optimize")

    @contextlib.contextmanager
    def hold(self) -> Iterator[EdgeStore]:
        """Nothing to hold: the owner keeps the shards open between calls."""
        yield self

    def close(self) -> None:
        """Let go of the folder; the last store of an owner process closes the
        shards and hands ownership on to a client."""
        role, self._role = self._role, None
        if role is None or role.pid != os.getpid():
            return
        with _roles_guard:
            role.users -= 1
            last = role.users <= 0
            if last and _roles.get(self.root) is role:
                del _roles[self.root]
        if last:
            role.close()

    @property
    def is_owner(self) -> bool:
        """Whether this process holds the shards (for tests and benchmarks)."""
        return self._backend_role().engine is not None

    # -- inside ---------------------------------------------------------------------------

    def _backend_role(self) -> _Role:
        if self._role is None or self._role.pid != os.getpid():
            self._role = _role(self.root, self.collection, self._engine_args,
                               self._timeout_s)
        return self._role

    def _call(self, op: str, **kw: Any) -> Any:
        """``op`` on the engine, here or in the owner; on losing the owner, take
        over or wait for the new one, then retry."""
        deadline = time.monotonic() + self._timeout_s
        delay = 0.01
        while True:
            role = self._backend_role()
            backend = role.backend()
            if isinstance(backend, Client):
                try:
                    return backend.call(op, **kw)
                except OwnerGone:
                    role.lost_owner(backend)
            elif backend is not None:
                return getattr(backend, op)(**kw)
            if time.monotonic() >= deadline:
                raise StoreBusyError(
                    f"the embedded vector store {self.root} has an owner process that does "
                    f"not answer (waited {self._timeout_s:g}s); retry later, or use a Qdrant "
                    "server (SIROCCO_QDRANT_URL)")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
