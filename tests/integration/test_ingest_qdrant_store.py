"""The embedded stores (qdrant-edge, and qdrant-client's local mode) and a
server when one is reachable: the Store contract; and, in local mode, two
processes sharing one store folder through the cross-process lock (the edge
engine's owner and clients: ``test_edge_store``)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from retrieval.factory import create_store
from retrieval.qdrant_store import QdrantStore
from sirocco.errors import ConfigError, StoreBusyError
from sirocco.principal import Principal
from sirocco.settings import Settings
from sirocco.types import Chunk
from tests.support import optional

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _settings(tmp_path: Path, **qdrant) -> Settings:
    q = {"path": str(tmp_path / "qdrant"), "collection": f"t_{uuid.uuid4().hex[:8]}", **qdrant}
    return Settings(data_dir=tmp_path, env="test", qdrant=q)


@pytest.fixture(params=["edge", "local"])
def embedded(request, tmp_path):
    """A new embedded store on each engine."""
    store = create_store(_settings(tmp_path, engine=request.param))
    yield store
    store.close()


def _chunks(doc_id: str, n: int, tenant: str = "default") -> list[Chunk]:
    return [
        Chunk(
            doc_id=doc_id,
            chunk_index=i,
            text=f"{doc_id} part {i}",
            title=f"T {doc_id}",
            source=f"/docs/{doc_id}.md",
            start_char=10 * i,
            end_char=10 * i + 9,
            page=i + 1,
            headings=("H1", f"H2-{i}"),
            tenant=tenant,
        )
        for i in range(n)
    ]


def test_upsert_search_filter_delete_count(embedded):
    store = embedded
    assert store.count() == 0 and store.search([1, 0, 0], top_k=3) == []
    store.upsert(_chunks("a", 3), [[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0]])
    store.upsert(_chunks("b", 2, tenant="acme"), [[1, 0.05, 0], [0, 0, 1]])
    assert store.count() == 5 and store.count(doc_id="a") == 3

    hits = store.search([1, 0, 0], top_k=3)
    assert [(h.doc_id, h.chunk_index) for h in hits] == [("a", 0), ("b", 0), ("a", 1)]
    top = hits[0]
    assert top.score == pytest.approx(1.0)
    assert (top.text, top.title, top.source) == ("a part 0", "T a", "/docs/a.md")
    assert (top.page, top.headings, top.start_char, top.end_char) == (1, ("H1", "H2-0"), 0, 9)
    assert top.chunk_id == _chunks("a", 1)[0].id

    assert {h.doc_id for h in store.search([1, 0, 0], top_k=10, tenant="acme")} == {"b"}
    assert {h.doc_id for h in store.search([1, 0, 0], top_k=10, doc_ids=["a"])} == {"a"}
    assert store.search([1, 0, 0], top_k=10, doc_ids=[]) == []

    # Re-upserting the same chunks never duplicates (deterministic ids).
    store.upsert(_chunks("a", 3), [[1, 0, 0]] * 3)
    assert store.count() == 5
    store.delete_document("a")
    assert store.count() == 2 and store.count(doc_id="a") == 0
    with pytest.raises(ConfigError, match="holds 3-dimensional vectors but the embedder makes 4"):
        store.ensure_collection(4)


def test_set_access_narrows_the_indexed_chunks_at_once(embedded):
    from dataclasses import replace

    from retrieval.store import SearchFilter

    store = embedded
    store.upsert([replace(c, acl=("*",)) for c in _chunks("a", 2)], [[1, 0, 0], [0.9, 0.1, 0]])
    store.upsert(_chunks("b", 1), [[0.8, 0.2, 0]])
    ana = Principal(tenant="default", user="ana", groups=("hr",))
    bob = Principal(tenant="default", user="bob", groups=("sales",))

    def seen(caller: Principal) -> set[str]:
        return {h.doc_id for h in store.search([1, 0, 0], top_k=10,
                                               filter=SearchFilter(caller=caller))}

    assert seen(ana) == seen(bob) == {"a", "b"}
    store.set_access(["a"], acl=["group:hr"], tags=["policy"])
    # Bob (same tenant, not in hr) loses document a at the next search; Ana keeps it.
    assert seen(bob) == {"b"} and seen(ana) == {"a", "b"}
    hits = store.search([1, 0, 0], top_k=10, filter=SearchFilter(caller=ana, tags=["policy"]))
    assert {h.doc_id for h in hits} == {"a"}
    store.set_access(["a"], acl=["*"], tags=[])
    assert seen(bob) == {"a", "b"}


def test_rebuild_fills_a_new_collection_then_swaps_or_abandons_it(embedded):
    store = embedded
    alias = store.collection
    store.upsert(_chunks("a", 2), [[1, 0, 0], [0, 1, 0]])
    assert store.finish_rebuild() is None and store.abandon_rebuild() is None
    building = store.begin_rebuild(3)
    assert store.begin_rebuild(3) == building == f"{alias}__2"  # idempotent
    store.upsert(_chunks("b", 1), [[0, 0, 1]])  # written to both while building
    status = store.index_status()
    assert (status["live"], status["building"]) == (f"{alias}__1", building)
    assert (status["live_points"], status["building_points"]) == (3, 1)
    assert {h.doc_id for h in store.search([1, 0, 0], top_k=5)} == {"a", "b"}
    assert store.abandon_rebuild() == building
    assert store.index_status()["building"] is None and store.count() == 3

    rebuilt = store.begin_rebuild(3)
    store.upsert(_chunks("c", 1), [[1, 0, 0]])
    assert store.finish_rebuild() == rebuilt
    status = store.index_status()
    assert (status["live"], status["building"], status["live_points"]) == (rebuilt, None, 1)
    assert [h.doc_id for h in store.search([1, 0, 0], top_k=5)] == ["c"]
    # Vectors that fit neither the live (3) nor the building (4) collection are refused.
    store.begin_rebuild(4)
    with pytest.raises(ConfigError, match="expects other vectors than the embedder makes"):
        store.upsert(_chunks("d", 1), [[1, 0, 0, 0, 0]])
    store.abandon_rebuild()


def test_lock_timeout_raises_store_busy(tmp_path):
    settings = _settings(tmp_path, lock_timeout_s=0.3)
    store = QdrantStore(settings)
    lock_file = settings.qdrant_path.with_name("qdrant.lock")
    with open(lock_file, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # another holder (same process, other descriptor)
        started = time.monotonic()
        with pytest.raises(StoreBusyError) as err:
            store.count()
        assert 0.25 < time.monotonic() - started < 5
    assert "stayed locked by another process for 0.3s" in err.value.message
    assert str(lock_file) in err.value.message
    assert store.count() == 0  # released: works again


def test_foreign_qdrant_client_is_reported(tmp_path):
    from qdrant_client import QdrantClient

    settings = _settings(tmp_path)
    foreign = QdrantClient(path=str(settings.qdrant_path))  # ignores our lock
    try:
        with pytest.raises(StoreBusyError, match="open in another program"):
            QdrantStore(settings).count()
    finally:
        foreign.close()
    assert QdrantStore(settings).count() == 0


WRITER = textwrap.dedent("""
    import sys
    from sirocco.settings import Settings
    from sirocco.types import Chunk
    from retrieval.qdrant_store import QdrantStore
    path, collection, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = QdrantStore(Settings(qdrant={"path": path, "collection": collection,
                                         "lock_timeout_s": 60}))
    for d in range(n):
        chunks = [Chunk(doc_id=f"doc{d}", chunk_index=i, text=f"doc {d} chunk {i}",
                        title="t", source="s", start_char=0, end_char=1) for i in range(4)]
        store.upsert(chunks, [[1.0, float(d + 1), float(i + 1)] for i in range(4)])
        if d % 5 == 0:
            store.delete_document(f"doc{d}")
            store.upsert(chunks, [[1.0, float(d + 1), float(i + 1)] for i in range(4)])
        if d == n // 2 - 1:
            # Hand over mid-way: the reader checks it sees exactly this much.
            print("half", flush=True)
            sys.stdin.readline()
    print("writer done")
""")


def test_two_processes_alternate_without_lock_errors(tmp_path):
    settings = _settings(tmp_path, lock_timeout_s=60)
    n_docs = 60
    store = QdrantStore(settings)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WRITER,
            str(settings.qdrant_path),
            settings.qdrant.collection,
            str(n_docs),
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    counts: list[int] = []
    try:
        lines = iter(writer.stdout.readline, "")
        assert "half" in (line.strip() for line in lines)  # warnings may come first
        # The writer holds no lock between operations: this process gets in.
        counts.append(store.count())
        store.search([1.0, 2.0, 3.0], top_k=3)
        writer.stdin.write("go\n")
        writer.stdin.flush()
        while writer.poll() is None:
            counts.append(store.count())
    finally:
        out, _ = writer.communicate(timeout=120)
    assert writer.returncode == 0, out
    assert "writer done" in out
    final = store.count()
    assert final == 4 * n_docs  # the other process's writes are visible without reopening
    # This process read while the other one was writing, and saw its progress.
    assert counts[0] == 4 * (n_docs // 2), counts[:3]
    assert len({h.doc_id for h in store.search([1.0, 5.0, 1.0], top_k=8)}) >= 2


def _doc(doc_id: str, text: str, **kw) -> Chunk:
    return Chunk(doc_id=doc_id, chunk_index=0, text=text, title=kw.pop("title", doc_id),
                 source=f"/docs/{doc_id}.md", start_char=0, end_char=len(text), **kw)


@pytest.fixture(params=["edge", "local", "server"])
def any_store(request, tmp_path):
    """Each embedded engine, and the adapter against a Qdrant server when
    SIROCCO_TEST_QDRANT_URL names one (none ships here: skipped otherwise)."""
    if request.param != "server":
        store = create_store(_settings(tmp_path, engine=request.param))
        yield store
        store.close()
        return
    url = os.environ.get("SIROCCO_TEST_QDRANT_URL")
    if not url:
        optional("a Qdrant server", "none configured (SIROCCO_TEST_QDRANT_URL)")
    store = QdrantStore(_settings(tmp_path, url=url))
    yield store
    from qdrant_client import QdrantClient

    from retrieval.collections import drop

    drop(QdrantClient(url=url), store.collection)


def test_sparse_and_hybrid_search_with_acl_and_filters_inside_qdrant(any_store):
    from retrieval.store import SearchFilter

    store = any_store
    docs = [
        _doc("pay", "Salary bands are reviewed every March by the compensation board.",
             tenant="acme", acl=("group:hr",), tags=("policy",), modified_at=100.0),
        _doc("leave", "Employees get 27 days of paid leave per year.", tenant="acme",
             tags=("policy",), modified_at=200.0, mime_type="text/markdown"),
        _doc("ana", "Ana's performance review notes for March.", tenant="acme",
             acl=("user:ana",), modified_at=300.0),
        _doc("other", "Salary bands at Globex are reviewed in March.", tenant="globex"),
    ]
    store.upsert(docs, [[1, 0, 0], [0, 1, 0], [0.7, 0.7, 0], [1, 0, 0]])

    # BM25 alone finds the lexical match; dense alone ranks by the vector.
    sparse = store.search(None, top_k=2, text="salary bands review", tenant="acme")
    assert sparse[0].doc_id == "pay"
    hybrid = store.search([0, 1, 0], top_k=4, text="salary bands", tenant="acme")
    assert {h.doc_id for h in hybrid[:2]} == {"pay", "leave"}  # one from each side, fused

    def visible(caller: Principal, **kw) -> set[str]:
        hits = store.search([1, 0, 0], top_k=10, text="March salary review leave",
                            filter=SearchFilter(caller=caller, **kw))
        return {h.doc_id for h in hits}

    assert visible(Principal("acme")) == {"leave"}
    assert visible(Principal("acme", groups=("hr",))) == {"leave", "pay"}
    assert visible(Principal("acme", user="ana")) == {"leave", "ana"}
    assert visible(Principal("globex", user="ana", groups=("hr",))) == {"other"}
    assert visible(Principal("acme", user="ana", groups=("hr",)), tags=["policy"]) == {"pay",
                                                                                  "leave"}
    assert visible(Principal("acme", user="ana", groups=("hr",)), modified_after=150.0) == {
        "leave", "ana"}
    assert visible(Principal("acme", user="ana"), mime_types=["text/markdown"]) == {"leave"}


def test_collection_sits_behind_an_alias_and_a_legacy_layout_is_refused(tmp_path):
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm

    settings = _settings(tmp_path)
    store = QdrantStore(settings)
    store.ensure_collection(3)
    alias = settings.qdrant.collection
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        assert {(a.alias_name, a.collection_name) for a in client.get_aliases().aliases} == {
            (alias, f"{alias}__1")}
        # A collection from before hybrid search (one unnamed vector).
        client.create_collection("legacy", vectors_config=qm.VectorParams(
            size=3, distance=qm.Distance.COSINE))
    finally:
        client.close()
    with pytest.raises(ConfigError, match="built before hybrid search"):
        QdrantStore(settings, collection="legacy").ensure_collection(3)


def test_drop_removes_the_alias_the_build_and_their_collections(tmp_path):
    from qdrant_client import QdrantClient

    from retrieval.collections import drop

    settings = _settings(tmp_path)
    store = QdrantStore(settings)
    store.ensure_collection(3)
    store.begin_rebuild(3)
    assert store.index_status()["building"] is not None
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        drop(client, settings.qdrant.collection)
        assert client.get_aliases().aliases == [] and client.get_collections().collections == []
    finally:
        client.close()
