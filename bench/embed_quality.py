"""Embedding backends on SciFact: retrieval quality and embedding speed.

    .venv/bin/python bench/embed_quality.py                       # whole corpus (5,183 docs)
    .venv/bin/python bench/embed_quality.py --limit-docs 500      # a quick look
    .venv/bin/python bench/embed_quality.py --backends torch,onnx-int8

Each backend (``SIROCCO_EMBEDDING__BACKEND``: torch fp32 or bf16, onnx fp32, onnx-int8)
embeds every document as ``title + "\\n" + text`` (cut at ``max_seq_length``
tokens by the embedder) through ``ingest.embedding.base.create_embedder``, then the
300 test queries (their ``text`` only: ``metadata`` holds gold evidence) with
``embed_query``. Retrieval is exact cosine top-100 in numpy; nDCG@10 and
Recall@100 come from ir-measures (pytrec_eval) on ``qrels/test.tsv``.

Speed: the corpus is cut into slices and every slice is embedded by each
backend in turn (the first backend rotating), so load from other processes
falls on all backends alike. docs/s counts ``embed_documents`` time only: the
models are built and ONNX exports prepared before the clock starts. The peer
is torch fp32 (sentence-transformers), the model's reference implementation.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"
#: --quick: the 10-document BEIR fixture the tests ship (same code paths, seconds).
QUICK_DATA = REPO / "tests" / "data" / "beir-mini"
BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")
QUALITY_GATE = 0.005


def load_scifact(data: Path, limit_docs: int | None) -> tuple[dict, dict, dict]:
    """(doc id -> text, query id -> text, qrels) for the test split."""
    docs: dict[str, str] = {}
    with (data / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            docs[row["_id"]] = f"{row['title'].strip()}\n{row['text'].strip()}"
            if limit_docs and len(docs) >= limit_docs:
                break
    qrels: dict[str, dict[str, int]] = {}
    with (data / "qrels" / "test.tsv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["corpus-id"] in docs:  # a --limit-docs run judges what it indexed
                qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    queries: dict[str, str] = {}
    with (data / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["_id"] in qrels:
                queries[row["_id"]] = row["text"]  # never row["metadata"]: gold labels
    return docs, queries, qrels


def build(backend: str, models_dir: Path, threads: int | None):
    """The backend's embedder, its ONNX export prepared (not timed)."""
    from ingest.embedding.base import create_embedder
    from sirocco.settings import Settings

    embedding = {"backend": backend, **({"threads": threads} if threads else {})}
    settings = Settings(env="test", data_dir=REPO / "var", models_dir=models_dir,
                        embedding=embedding)
    return create_embedder(settings)


def search(q: np.ndarray, d: np.ndarray, doc_ids: list[str], qids: list[str], k: int) -> dict:
    """Exact cosine top-k (vectors are unit length) as an ir-measures run."""
    scores = q @ d.T
    k = min(k, d.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return {qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(qids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR SciFact folder")
    ap.add_argument("--quick", action="store_true",
                    help="the 10-document fixture in tests/data: a smoke check")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    ap.add_argument("--limit-docs", type=int, default=None, help="first N documents only")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads")
    ap.add_argument("--cross", action="store_true",
                    help="also documents of one backend against queries of another")
    ap.add_argument("--slice", type=int, default=256, help="documents per timed slice")
    ap.add_argument("--models-dir", type=Path, default=REPO / "var" / "models",
                    help="ONNX export cache (settings.models_dir)")
    args = ap.parse_args()
    if args.quick:
        args.data = QUICK_DATA
        print(f"--quick: {QUICK_DATA.relative_to(REPO)} (10 documents): a smoke check, "
              "not a benchmark figure")
        args.slice = 4
    logging.basicConfig(level=logging.WARNING)
    import ir_measures
    from ir_measures import R, nDCG

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        ap.error(f"unknown backend(s) {unknown}; valid: {list(BACKENDS)}")
    docs, queries, qrels = load_scifact(args.data, args.limit_docs)
    doc_ids, texts = list(docs), list(docs.values())
    qids = list(queries)
    embedders = {b: build(b, args.models_dir, args.threads) for b in backends}
    for e in embedders.values():  # warm-up: first-call allocations are not throughput
        e.embed_documents(texts[:8])

    load_before = os.getloadavg()[0]
    seconds = dict.fromkeys(backends, 0.0)
    vectors: dict[str, list[list[float]]] = {b: [] for b in backends}
    for n, start in enumerate(range(0, len(texts), args.slice)):
        part = texts[start : start + args.slice]
        for b in backends[n % len(backends):] + backends[: n % len(backends)]:
            t0 = time.perf_counter()
            vectors[b].extend(embedders[b].embed_documents(part))
            seconds[b] += time.perf_counter() - t0
        print(f"  {start + len(part)}/{len(texts)} docs", file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]

    results, query_vectors = {}, {}
    for b in backends:
        t0 = time.perf_counter()
        q = np.asarray([embedders[b].embed_query(queries[qid]) for qid in qids], np.float32)
        q_seconds = time.perf_counter() - t0
        query_vectors[b] = q
        run = search(q, np.asarray(vectors[b], np.float32), doc_ids, qids, k=100)
        metrics = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], qrels, run)
        results[b] = (metrics[nDCG @ 10], metrics[R @ 100], len(texts) / seconds[b],
                      len(qids) / q_seconds)

    print(f"\ndocuments: {len(texts)}  queries: {len(qids)}  cores: {os.cpu_count()}  "
          f"threads: {args.threads or 'default'}  load avg: {load_before:.1f} -> {load_after:.1f}")
    ref = results.get("torch")
    print("| backend | nDCG@10 | Δ vs torch | Recall@100 | docs/s | vs torch | queries/s |")
    print("|---|---|---|---|---|---|---|")
    for b, (ndcg, recall, dps, qps) in results.items():
        delta = f"{ndcg - ref[0]:+.4f}" if ref else "n/a"
        ratio = f"{dps / ref[2]:.2f}x" if ref else "n/a"
        print(f"| {b} | {ndcg:.4f} | {delta} | {recall:.4f} | {dps:.1f} | {ratio} | {qps:.1f} |")
    if ref:
        for b, (ndcg, *_rest) in results.items():
            verdict = "pass" if abs(ndcg - ref[0]) <= QUALITY_GATE else "FAIL"
            print(f"quality gate |Δ nDCG@10| <= {QUALITY_GATE}: {b}: {verdict}")
    if args.cross:
        cross(vectors, query_vectors, doc_ids, qids, qrels, ref[0] if ref else None)


def cross(vectors: dict, query_vectors: dict, doc_ids: list[str], qids: list[str],
          qrels: dict, ref: float | None) -> None:
    """nDCG@10 with documents of one backend and queries of another (a
    deployment that embeds queries with a faster backend than its documents)."""
    import ir_measures
    from ir_measures import nDCG

    print("\n| documents | queries | nDCG@10 | Δ vs torch |\n|---|---|---|---|")
    for d in vectors:
        for q in query_vectors:
            if d == q:
                continue
            run = search(query_vectors[q], np.asarray(vectors[d], np.float32), doc_ids, qids,
                         k=100)
            ndcg = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]
            delta = f"{ndcg - ref:+.4f}" if ref is not None else "n/a"
            gate = "" if ref is None else (
                " pass" if abs(ndcg - ref) <= QUALITY_GATE else " FAIL")
            print(f"| {d} | {q} | {ndcg:.4f} | {delta}{gate} |")


if __name__ == "__main__":
    main()
