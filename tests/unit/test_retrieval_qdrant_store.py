"""QdrantStore pieces that need no Qdrant: payload mapping, filters, the lock."""

from __future__ import annotations

import threading
import time

import pytest
from qdrant_client import models as qm

from retrieval.factory import create_store
from retrieval.locking import FileLock as _FileLock
from retrieval.qdrant_payload import hit_of, payload, qdrant_filter
from retrieval.qdrant_store import QdrantStore
from retrieval.store import SearchFilter, resolve_mode
from sirocco.errors import InvalidInputError, StoreBusyError
from sirocco.principal import Principal
from sirocco.settings import Settings
from sirocco.types import Chunk


def test_payload_round_trips_into_a_searchhit_of():
    chunk = Chunk(
        doc_id="d",
        chunk_index=3,
        text="body",
        title="Title",
        source="/a.pdf",
        start_char=5,
        end_char=9,
        page=2,
        headings=("A", "B"),
        tenant="acme",
    )
    body = payload(chunk)
    assert body["tenant"] == "acme" and body["doc_id"] == "d" and body["acl"] == ["*"]
    hit = hit_of(qm.ScoredPoint(id=chunk.id, version=0, score=0.5, payload=body))
    assert (hit.chunk_id, hit.doc_id, hit.chunk_index, hit.score) == (chunk.id, "d", 3, 0.5)
    assert (hit.text, hit.title, hit.source, hit.page) == ("body", "Title", "/a.pdf", 2)
    assert (hit.headings, hit.start_char, hit.end_char) == (("A", "B"), 5, 9)


def test_filters_are_built_for_qdrant():
    assert qdrant_filter(SearchFilter()) is None
    f = qdrant_filter(SearchFilter(tenant="acme", doc_ids=["x", "y"], tags=["hr"],
                                   mime_types=["application/pdf"], source_ids=["s1"],
                                   modified_after=10.0))
    keys = {c.key: c.match or c.range for c in f.must}
    assert keys["tenant"] == qm.MatchValue(value="acme")
    assert keys["doc_id"] == qm.MatchAny(any=["x", "y"])
    assert keys["tags"] == qm.MatchAny(any=["hr"])
    assert keys["mime_type"] == qm.MatchAny(any=["application/pdf"])
    assert keys["source_id"] == qm.MatchAny(any=["s1"])
    assert keys["modified_at"] == qm.Range(gte=10.0, lte=None)


def test_a_caller_always_brings_its_tenant_and_acl_into_the_filter():
    caller = Principal(tenant="acme", user="ana", groups=("hr", "eng"))
    f = qdrant_filter(SearchFilter(caller=caller))
    keys = {c.key: c.match for c in f.must}
    assert keys["tenant"] == qm.MatchValue(value="acme")
    assert keys["acl"] == qm.MatchAny(any=["*", "user:ana", "group:hr", "group:eng"])
    with pytest.raises(InvalidInputError, match="other than the caller's"):
        SearchFilter(caller=caller, tenant="globex")


def test_search_mode_needs_its_inputs():
    assert resolve_mode([1.0], "q", None) == "hybrid"
    assert resolve_mode([1.0], None, None) == "dense"
    assert resolve_mode(None, "q", None) == "sparse"
    with pytest.raises(InvalidInputError, match="a hybrid search needs the query text"):
        resolve_mode([1.0], "  ", "hybrid")
    with pytest.raises(InvalidInputError, match="unknown search mode 'fuzzy'"):
        resolve_mode([1.0], "q", "fuzzy")


def test_factory_picks_edge_by_default_and_local_mode_on_request(tmp_path):
    from retrieval.edge_store import EdgeStore

    store = create_store(Settings(data_dir=tmp_path))
    assert isinstance(store, EdgeStore)
    assert store.root == (tmp_path / "qdrant" / "edge" / "sirocco_chunks").resolve()
    local = create_store(Settings(data_dir=tmp_path, qdrant={"engine": "local"}))
    assert isinstance(local, QdrantStore) and not isinstance(local, EdgeStore)
    assert (tmp_path / "qdrant.lock").parent.exists()
    # A server wins over either embedded engine.
    remote = create_store(Settings(data_dir=tmp_path, qdrant={"url": "http://127.0.0.1:1"}))
    assert isinstance(remote, QdrantStore)
    remote.close()


def test_file_lock_waits_then_times_out_with_a_clear_message(tmp_path):
    path = tmp_path / "store.lock"
    holder = _FileLock(path, timeout_s=5)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder:
            held.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    started = time.monotonic()
    with pytest.raises(StoreBusyError) as err, _FileLock(path, timeout_s=0.2):
        pass
    assert time.monotonic() - started >= 0.2
    assert "stayed locked by another process for 0.2s" in err.value.message
    assert "SIROCCO_QDRANT_URL" in err.value.message
    # A waiter within its timeout gets the lock once the holder lets go.
    threading.Timer(0.2, release.set).start()
    with _FileLock(path, timeout_s=5):
        pass
    t.join(5)


def test_hybrid_fusion_is_dbsf_unless_rrf_is_configured(tmp_path):
    dbsf = QdrantStore(Settings(data_dir=tmp_path))._fusion
    assert dbsf == qm.FusionQuery(fusion=qm.Fusion.DBSF)
    rrf = QdrantStore(Settings(data_dir=tmp_path, retrieval={"fusion": "rrf"}))._fusion
    assert rrf == qm.RrfQuery(rrf=qm.Rrf(k=60))
