"""QdrantStore pieces that need no Qdrant: payload mapping, filters, the lock."""

from __future__ import annotations

import threading
import time

import pytest
from qdrant_client import models as qm

from retrieval.qdrant_store import QdrantStore, _FileLock, _filter, _hit, _payload
from retrieval.store import create_store
from sirocco.errors import StoreBusyError
from sirocco.settings import Settings
from sirocco.types import Chunk


def test_payload_round_trips_into_a_search_hit():
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
    payload = _payload(chunk)
    assert payload["tenant"] == "acme" and payload["doc_id"] == "d"
    hit = _hit(qm.ScoredPoint(id=chunk.id, version=0, score=0.5, payload=payload))
    assert (hit.chunk_id, hit.doc_id, hit.chunk_index, hit.score) == (chunk.id, "d", 3, 0.5)
    assert (hit.text, hit.title, hit.source, hit.page) == ("body", "Title", "/a.pdf", 2)
    assert (hit.headings, hit.start_char, hit.end_char) == (("A", "B"), 5, 9)


def test_filters_are_built_for_qdrant():
    assert _filter() is None
    f = _filter(tenant="acme", doc_ids=["x", "y"])
    keys = {c.key: c.match for c in f.must}
    assert keys["tenant"] == qm.MatchValue(value="acme")
    assert keys["doc_id"] == qm.MatchAny(any=["x", "y"])


def test_factory_picks_local_mode(tmp_path):
    store = create_store(Settings(data_dir=tmp_path))
    assert isinstance(store, QdrantStore)
    assert (tmp_path / "qdrant.lock").parent.exists()


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
