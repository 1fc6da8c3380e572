"""The qdrant-edge embedded store across processes: one owner holds the shards,
the others reach it over its socket; a reader and a writer at once; the owner
killed (SIGKILL) and a client taking over; and parity of results with
qdrant-client's local mode (and a server when SIROCCO_TEST_QDRANT_URL names one)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from retrieval.edge_store import EdgeStore
from retrieval.factory import create_store
from retrieval.store import SearchFilter
from sirocco.principal import Principal
from sirocco.settings import Settings
from sirocco.types import Chunk

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

#: Writes ``n`` documents one at a time, printing each one's name once stored;
#: prints "owner" or "client" first, and "done" at the end; then waits for
#: stdin to close (so it stays the owner while the test reads).
WRITER = textwrap.dedent("""
    import sys, time
    from retrieval.edge_store import EdgeStore
    from sirocco.settings import Settings
    from sirocco.types import Chunk
    path, collection, n, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    store = EdgeStore(Settings(qdrant={"path": path, "collection": collection,
                                       "lock_timeout_s": 30}))
    store.count()
    print("owner" if store.is_owner else "client", flush=True)
    for d in range(n):
        chunks = [Chunk(doc_id=f"doc{d}", chunk_index=i, text=f"writer document {d} part {i}",
                        title="t", source="s", start_char=0, end_char=1) for i in range(3)]
        store.upsert(chunks, [[1.0, float(d + 1), float(i + 1)] for i in range(3)])
        print(f"doc{d}", flush=True)
        time.sleep(pause)
    print("done", flush=True)
    sys.stdin.readline()
    store.close()
""")


def _settings(tmp_path: Path, **qdrant) -> Settings:
    q = {"path": str(tmp_path / "qdrant"), "collection": f"t_{uuid.uuid4().hex[:8]}",
         "lock_timeout_s": 30, **qdrant}
    return Settings(data_dir=tmp_path, env="test", qdrant=q)


def _writer(settings: Settings, n: int, pause: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(settings.qdrant_path), settings.qdrant.collection,
         str(n), str(pause)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


@pytest.mark.parametrize("reader_owns", [True, False], ids=["reader-owns", "writer-owns"])
def test_a_reader_sees_a_concurrent_writers_documents_within_a_bound(tmp_path, reader_owns):
    settings = _settings(tmp_path)
    reader = EdgeStore(settings)
    if reader_owns:
        assert reader.count() == 0 and reader.is_owner
    writer = _writer(settings, n=20, pause=0.05)
    try:
        assert _line(writer) == ("client" if reader_owns else "owner")
        assert reader.is_owner is reader_owns
        lags: list[float] = []
        while (name := _line(writer)) != "done":
            assert name.startswith("doc"), name
            written = time.monotonic()
            # Reads go on while the other process writes: no lock between them.
            while reader.count(doc_id=name) != 3:
                assert time.monotonic() - written < 5.0, f"{name} not visible after 5 s"
                time.sleep(0.005)
            lags.append(time.monotonic() - written)
            hits = reader.search([1.0, 1.0, 1.0], text=f"writer document {name[3:]}",
                                 top_k=3, doc_ids=[name])
            assert {h.doc_id for h in hits} == {name}
        assert reader.count() == 60 and len(lags) == 20
        assert max(lags) < 5.0
    finally:
        writer.communicate("\n", timeout=60)
    assert writer.returncode == 0
    reader.close()


def test_a_client_takes_over_when_the_owner_is_killed(tmp_path):
    settings = _settings(tmp_path)
    owner = _writer(settings, n=5, pause=0)
    try:
        assert _line(owner) == "owner"
        while _line(owner) != "done":
            pass
        client = EdgeStore(settings)
        assert client.count() == 15 and not client.is_owner
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(30)
        # The next call finds the socket closed, takes the lock, opens the shards
        # (replaying the WAL) and answers: nothing acknowledged is lost.
        assert client.count() == 15
        assert client.is_owner
        client.upsert([Chunk(doc_id="after", chunk_index=0, text="after the takeover",
                             title="t", source="s", start_char=0, end_char=1)], [[1.0, 0, 0]])
        assert {h.doc_id for h in client.search(None, text="takeover", top_k=3)} == {"after"}
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(30)
    client.close()
    # Once closed, another process can own the folder again and sees it all.
    again = _writer(settings, n=0, pause=0)
    try:
        assert _line(again) == "owner"
    finally:
        again.communicate("\n", timeout=60)


def test_stores_of_one_folder_in_one_process_share_the_owner(tmp_path):
    settings = _settings(tmp_path)
    first, second = EdgeStore(settings), EdgeStore(settings)
    first.upsert([Chunk(doc_id="a", chunk_index=0, text="x", title="t", source="s",
                        start_char=0, end_char=1)], [[1.0, 0, 0]])
    assert second.count() == 1 and first.is_owner and second.is_owner
    first.close()
    assert second.count() == 1  # still open for the other store
    second.close()


@pytest.mark.parametrize("engine", ["edge", "local"])
def test_replacing_documents_never_leaves_a_reader_without_them(tmp_path, engine):
    # Re-ingesting (a rebuild, a changed file) replaces every chunk of a batch
    # of documents; a search meanwhile must find each one, old chunks or new.
    import threading

    store = create_store(_settings(tmp_path, engine=engine))
    docs = [f"d{i}" for i in range(24)]

    def chunks(n: int, tag: str) -> list[Chunk]:
        return [Chunk(doc_id=d, chunk_index=i, text=f"{tag} {d} part {i}", title="t",
                      source="s", start_char=0, end_char=1) for d in docs for i in range(n)]

    first = chunks(4, "old")
    store.upsert(first, [[1.0, 0.5, float(i % 7)] for i in range(len(first))])
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(len(store.search([1.0, 0.5, 1.0], top_k=5, mode="dense")))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in (2, 5, 3) * 3:
            new = chunks(n, f"v{n}")
            store.replace_documents(docs, new, [[1.0, 0.5, float(i % 7)] for i in range(len(new))])
    finally:
        stop.set()
        reader.join(30)
    assert seen and min(seen) == 5, sorted(set(seen))
    # Fewer chunks than before: the stale positions are gone.
    assert store.count() == 24 * 3 and store.count(doc_id="d0") == 3
    store.close()


def test_a_shard_left_behind_by_a_crash_is_removed_and_the_live_one_kept(tmp_path):
    settings = _settings(tmp_path)
    store = EdgeStore(settings)
    store.upsert([Chunk(doc_id="a", chunk_index=0, text="x", title="t", source="s",
                        start_char=0, end_char=1)], [[1.0, 0, 0]])
    store.close()
    alias = settings.qdrant.collection
    orphan = store.root / f"{alias}__7"  # as if a swap died before deleting it
    (orphan / "segments").mkdir(parents=True)
    again = EdgeStore(settings)
    assert again.count() == 1 and again.index_status()["live"] == f"{alias}__1"
    assert not orphan.exists() and (store.root / f"{alias}__1").is_dir()
    again.close()


def _vocabulary(rng: random.Random, n: int = 300) -> list[str]:
    return ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=7)) for _ in range(n)]


def _corpus(rng: random.Random, words: list[str], n: int,
            dim: int) -> tuple[list[Chunk], list[list[float]]]:
    """Documents of Zipf-distributed words (varied lengths and term counts, so
    BM25 scores rarely tie) with random vectors, in two tenants and three ACLs."""
    weights = [1 / (i + 1) for i in range(len(words))]
    chunks, vectors = [], []
    for d in range(n):
        text = rng.choices(words, weights, k=rng.randint(20, 80))
        chunks.append(Chunk(
            doc_id=f"d{d}", chunk_index=0, text=" ".join(text), title=f"Doc {d}",
            source=f"/docs/d{d}.md", start_char=0, end_char=1,
            tenant=rng.choice(("acme", "globex")),
            acl=(rng.choice(("*", "group:hr", "user:ana")),)))
        vectors.append([rng.gauss(0, 1) for _ in range(dim)])
    return chunks, vectors


def _assert_same_ranking(got: list, want: list, rel: float, where: object) -> None:
    """Same top 10, best first, up to ties: scores agree within ``rel``; a chunk
    clearly above the other side's cut is in both; two chunks whose scores
    clearly differ come in the same order. (Engines order tied chunks
    differently, and under RRF a BM25 tie in a prefetch list shifts a chunk's
    rank there by one, so its fused score by ~0.5%.)"""
    assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=rel), where

    def clearly(x: float, y: float) -> bool:  # x clearly above y
        return x > y + rel * max(abs(x), abs(y), 1e-9)

    for mine, theirs in ((got, want), (want, got)):
        ids = {h.chunk_id for h in theirs}
        assert all(h.chunk_id in ids for h in mine if clearly(h.score, theirs[-1].score)), where
    order = {h.chunk_id: i for i, h in enumerate(want)}
    for i, x in enumerate(got):
        for y in got[i + 1:]:
            if x.chunk_id in order and y.chunk_id in order and clearly(x.score, y.score):
                assert order[x.chunk_id] < order[y.chunk_id], where


@pytest.mark.parametrize("fusion", ["dbsf", "rrf"])
def test_parity_same_top_10_on_edge_local_mode_and_a_server(tmp_path, fusion):
    rng = random.Random(19)
    words = _vocabulary(rng)
    chunks, vectors = _corpus(rng, words, 400, 16)
    engines = {"edge": {"engine": "edge"}, "local": {"engine": "local"}}
    url = os.environ.get("SIROCCO_TEST_QDRANT_URL")
    if url:
        engines["server"] = {"url": url}
    stores = {}
    for name, q in engines.items():
        s = _settings(tmp_path / name, **q)
        stores[name] = create_store(s.model_copy(update={
            "retrieval": s.retrieval.model_copy(update={"fusion": fusion})}))
        stores[name].upsert(chunks, vectors)
    callers = [None, Principal("acme"), Principal("acme", groups=("hr",)),
               Principal("globex", user="ana")]
    try:
        for q in range(12):
            text = " ".join(rng.sample(words[:60], k=3))
            vector = [rng.gauss(0, 1) for _ in range(16)]
            caller = callers[q % len(callers)]
            for mode in ("dense", "sparse", "hybrid"):
                hits = {name: store.search(vector, text=text, mode=mode, top_k=10,
                                           filter=SearchFilter(caller=caller))
                        for name, store in stores.items()}
                assert len(hits["edge"]) == 10
                rel = 1e-2 if mode == "hybrid" and fusion == "rrf" else 1e-4
                for name, found in hits.items():
                    _assert_same_ranking(found, hits["edge"], rel, (mode, text, caller, name))
    finally:
        for store in stores.values():
            store.close()
        if url:
            from qdrant_client import QdrantClient

            from retrieval.collections import drop

            drop(QdrantClient(url=url), stores["server"].collection)
