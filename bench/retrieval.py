"""Retrieval quality and latency on SciFact: dense, BM25 and hybrid, and the
peer a user would use instead, LangChain's dense-only
``QdrantVectorStore.similarity_search``, over the same collection in one run.

    .venv/bin/python bench/retrieval.py            # ../shared/data/scifact, test split

Quality: ``retrieval.evaluation`` (ir-measures nDCG@10, Recall@100, MRR@10),
the same code as ``sirocco eval retrieval``. Latency: every test query once
per method (interleaved query by query), query embedding included, p50 and
p95, after 20 warm-up queries; the collection is held open in this process for
both (Qdrant local mode), so the comparison is the search work itself. Corpus
vectors are cached under var/eval between runs (same texts and model).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"
#: --quick: the 10-document BEIR fixture the tests ship (same code paths, seconds).
QUICK_DATA = REPO / "tests" / "data" / "beir-mini"


def latencies(methods: dict, queries: list[str]) -> dict[str, tuple[float, float]]:  # type: ignore[type-arg]
    """p50 and p95 ms per method. Interleaved: each query runs every method in
    turn (the first one rotating), so load from other processes falls on all alike."""
    names = list(methods)
    for q in queries[:20]:
        for name in names:
            methods[name](q)
    ms: dict[str, list[float]] = {name: [] for name in names}
    for i, q in enumerate(queries):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t0 = time.perf_counter()
            methods[name](q)
            ms[name].append((time.perf_counter() - t0) * 1000)
    return {name: (statistics.median(v), statistics.quantiles(v, n=20)[18])
            for name, v in ms.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--quick", action="store_true",
                    help="the 10-document fixture in tests/data: a smoke check")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    if args.quick:
        args.data = QUICK_DATA
        print(f"--quick: {QUICK_DATA.relative_to(REPO)} (10 documents): a smoke check, "
              "not a benchmark figure")
    logging.basicConfig(level=logging.WARNING)
    if not (args.data / "corpus.jsonl").is_file():
        sys.exit(f"{args.data}/corpus.jsonl not found (see ../shared/data/README.md)")

    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_qdrant import QdrantVectorStore

    from ingest.embedding.choice import resolve_backend
    from ingest.embedding.model import embedding_model_dir
    from ingest.evaluation import embedder_tag, product_pipeline
    from ingest.pipeline import embedding_text
    from retrieval.evaluation import MEASURES, evaluate, load_beir
    from retrieval.qdrant_store import DENSE, QdrantStore
    from sirocco.settings import Settings

    settings = Settings()
    data = load_beir(args.data, args.split)
    chunk, embed, embedder = product_pipeline(settings)
    backend = resolve_backend(settings)
    cache = REPO / "var" / "eval" / f"vectors-{args.data.name}-{backend}.npz"
    with tempfile.TemporaryDirectory(prefix="sirocco-bench-") as tmp:
        q = settings.qdrant.model_copy(update={"path": Path(tmp) / "qdrant",
                                               "collection": "scifact"})
        store = QdrantStore(settings.model_copy(update={"qdrant": q}))
        with store.hold():
            report = evaluate(data, store, name=args.data.name, split=args.split, chunk=chunk,
                              embed=embed, embed_query=embedder.embed_query, cache=cache,
                              embedded_text=embedding_text, model_tag=embedder_tag(embedder))
            lc = QdrantVectorStore(
                client=store.held_client, collection_name="scifact", vector_name=DENSE,
                content_payload_key="text", metadata_payload_key="meta",
                embedding=HuggingFaceEmbeddings(model_name=str(embedding_model_dir(settings)),
                                                encode_kwargs={"normalize_embeddings": True}))
            queries = list(data.queries.values())
            timings = latencies({
                "langchain similarity_search (dense)": lambda t: lc.similarity_search(t, k=10),
                "sirocco dense": lambda t: store.search(
                    embedder.embed_query(t), top_k=10, mode="dense"),
                "sirocco sparse (BM25)": lambda t: store.search(
                    None, top_k=10, text=t, mode="sparse"),
                "sirocco hybrid": lambda t: store.search(
                    embedder.embed_query(t), top_k=10, text=t, mode="hybrid"),
            }, queries)
    print(f"{report.dataset} {report.split}: {report.queries} queries, {report.documents} "
          f"documents, {report.chunks} chunks, embedding backend {backend}")
    print(f"{'mode':10} " + " ".join(f"{m:>8}" for m in MEASURES))
    for mode, r in report.modes.items():
        print(f"{mode:10} " + " ".join(f"{r.metrics[m]:8.4f}" for m in MEASURES))
    print(f"\n{'method':40} {'p50 ms':>8} {'p95 ms':>8}")
    for name, (p50, p95) in timings.items():
        print(f"{name:40} {p50:8.2f} {p95:8.2f}")
    peer = timings["langchain similarity_search (dense)"][0]
    print(f"\nhybrid p50 / langchain dense p50: x{timings['sirocco hybrid'][0] / peer:.2f} "
          "(target <= 1.5)")


if __name__ == "__main__":
    main()
