"""Speed where users meet it: the served product (``sirocco up`` on embedded
defaults, as ``make run`` starts it) against the same work in one process.

    .venv/bin/python bench/served.py                      # SciFact, scale 1, 5, 20
    .venv/bin/python bench/served.py --limit 1000 --copies 1,5   # a labelled subset
    .venv/bin/python bench/served.py --redis redis://127.0.0.1:6379/14  # + Redis broker
    .venv/bin/python bench/served.py --quick              # smoke check (make test)

1. Ingestion: the in-process pipeline (``bench/ingest.py``'s ``run_sirocco``:
   both stages in this process) on the SciFact abstracts as Markdown files,
   then ``sirocco ingest`` of the same folder through the served product
   (embedded broker; again with ``--redis``). docs/s and chunks/s for each,
   and the ratio served / in-process (target >= 0.8). The LangChain pipeline
   (``QdrantVectorStore``, the peer of ``bench/ingest.py``) runs on the same
   documents unless ``--skip-peer``.
2. Search through the served API: ``POST /api/search`` (hybrid, top 10, query
   embedding included; wall time at the client and the server's ``took_ms``)
   for SciFact test queries, by 1 client and by 16 concurrent clients; and
   the ``retrieval.search`` span of ``POST /api/chat`` (from its trace).
3. Scale: the served store grows to ``copies`` x the corpus by writing
   perturbed copies of the chunks the in-process run embedded (each copy
   its own documents, text suffix and vector noise, so nothing deduplicates)
   through the ``Store`` port while the product serves, then step 2 again.
   Resident memory of the product's processes and disk per chunk are printed
   at each size. The rate limit is turned off for the benchmark's key.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.ingest import DEFAULT_DATA, QUICK_DATA, load_corpus, run_langchain  # noqa: E402
from bench.product import ServedProduct  # noqa: E402
from bench.served_scale import (  # noqa: E402
    RecordingStore,
    add_copies,
    cpu_used,
    disk_per_chunk,
    product_cpu_s,
    product_rss_mib,
)

SERVED_ENV = {"SIROCCO_AUTH__RATE_LIMIT_PER_MINUTE": "0"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def load_queries(data: Path, n: int) -> list[str]:
    """The first ``n`` SciFact queries with test judgements (all of them if fewer)."""
    tested = set()
    qrels = data / "qrels" / "test.tsv"
    if qrels.exists():
        tested = {line.split("\t")[0] for line in qrels.read_text().splitlines()[1:]}
    out = []
    with (data / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if not tested or row["_id"] in tested:
                out.append(row["text"])
    return out[:n]


def in_process(docs: list[dict[str, str]], work: Path) -> dict[str, Any]:
    """bench/ingest.py's in-process pipeline, recording what it stored."""
    from bench.ingest import run_sirocco

    recorder: dict[str, Any] = {}
    run = run_sirocco(docs, work, None, wrap=lambda store: RecordingStore(store, recorder))
    return {"elapsed": run["elapsed"], "chunks": run["chunks"],
            "chunks_stored": recorder.get("chunks", []),
            "vectors": recorder.get("vectors", [])}


def search_latency(product: ServedProduct, queries: list[str], clients: int) -> dict[str, Any]:
    """Every query once, spread over ``clients`` threads; client wall ms and
    server ``took_ms``."""
    wall: list[float] = []
    took: list[float] = []

    def run(share: list[str]) -> None:
        with httpx.Client(base_url=product.base, headers=product.headers, timeout=120) as c:
            for q in share:
                started = time.perf_counter()
                resp = c.post("/api/search", json={"query": q, "top_k": 10})
                resp.raise_for_status()
                wall.append((time.perf_counter() - started) * 1000)
                took.append(float(resp.json().get("took_ms") or 0.0))

    with httpx.Client(base_url=product.base, headers=product.headers, timeout=120) as c:
        for q in queries[:3]:  # warm-up: model and store caches
            c.post("/api/search", json={"query": q, "top_k": 10}).raise_for_status()
    shares = [queries[i::clients] for i in range(clients)]
    cpu, started = product_cpu_s(product), time.perf_counter()
    client_cpu = time.process_time()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, shares))
    seconds = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu
    cpu = cpu_used(cpu, product_cpu_s(product))
    return {"clients": clients, "n": len(wall), "p50_ms": pct(wall, 0.5),
            "p95_ms": pct(wall, 0.95), "server_p50_ms": pct(took, 0.5),
            "server_p95_ms": pct(took, 0.95), "per_s": len(wall) / seconds,
            "product_cores_busy": cpu / seconds, "product_cpu_ms": cpu / len(wall) * 1000,
            # The load generator shares the 2 cores: its own CPU per search.
            "client_cpu_ms": client_cpu / len(wall) * 1000}


def chat_retrieval_span(product: ServedProduct, queries: list[str]) -> dict[str, Any]:
    """``retrieval.search`` span durations of ``POST /api/chat`` answers."""
    spans: list[float] = []
    for q in queries:
        answer = product.chat(q)
        trace_id = answer.get("trace_id")
        if not trace_id:
            continue
        for _ in range(50):  # the trace writer is asynchronous
            resp = httpx.get(f"{product.base}/api/traces/{trace_id}", headers=product.headers,
                             timeout=30)
            if resp.status_code == 200:
                break
            time.sleep(0.2)
        for span in resp.json().get("spans", []) if resp.status_code == 200 else []:
            if span.get("name") == "retrieval.search" and span.get("duration_ms") is not None:
                spans.append(float(span["duration_ms"]))
    return {"n": len(spans), "p50_ms": pct(spans, 0.5) if spans else None,
            "p95_ms": pct(spans, 0.95) if spans else None}


def served_ingest(product: ServedProduct, folder: Path, docs: int,
                  chunks: int) -> dict[str, Any]:
    """``sirocco ingest FOLDER`` through the running product, timed."""
    seconds = product.ingest(folder)
    return {"seconds": seconds, "docs_s": docs / seconds, "chunks_s": chunks / seconds}


def measure_size(product: ServedProduct, queries: list[str], chat_n: int,
                 chunks: int) -> dict[str, Any]:
    one = search_latency(product, queries, 1)
    many = search_latency(product, queries, 16)
    chat = chat_retrieval_span(product, queries[:chat_n]) if chat_n else {}
    row = {"chunks": chunks, "search_1": one, "search_16": many, "chat_span": chat,
           "rss_mib": product_rss_mib(product), "disk_per_chunk_kib":
           disk_per_chunk(product.data_dir, chunks)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=None, help="only the first N documents")
    ap.add_argument("--copies", default="1,5,20", help="corpus sizes to search, in copies")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--chat", type=int, default=10, help="chat answers per size (span)")
    ap.add_argument("--redis", default=None, help="also ingest with this Redis broker URL")
    ap.add_argument("--skip-peer", action="store_true", help="no LangChain run")
    ap.add_argument("--quick", action="store_true", help="tests/data/beir-mini, tiny sizes")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args()
    if args.quick:
        args.data, args.copies, args.queries, args.chat = QUICK_DATA, "1,2", 8, 1
    docs = load_corpus(args.data, args.limit)
    copies = [int(c) for c in args.copies.split(",")]
    queries = load_queries(args.data, args.queries)
    label = f"first {args.limit} documents" if args.limit else f"all {len(docs)} documents"
    print(f"corpus: {args.data.name}, {label}; {len(queries)} queries", flush=True)
    result: dict[str, Any] = {"corpus": str(args.data), "docs": len(docs), "limit": args.limit}
    with tempfile.TemporaryDirectory(prefix="bench-served-") as tmp:
        work = Path(tmp)
        local = in_process(docs, work)
        n_chunks = local["chunks"]
        result["in_process"] = {"docs_s": len(docs) / local["elapsed"],
                                "chunks_s": n_chunks / local["elapsed"], "chunks": n_chunks}
        print("in-process pipeline:", json.dumps(result["in_process"]), flush=True)
        folder = work / "scifact-md"
        if not args.skip_peer:
            from ingest.embedding.model import embedding_model_dir
            from sirocco.settings import Settings

            model_dir = str(embedding_model_dir(Settings(env="dev", data_dir=work / "var")))
            peer = run_langchain(docs, work, model_dir)
            result["langchain"] = {"docs_s": len(docs) / peer["elapsed"],
                                   "chunks_s": peer["chunks"] / peer["elapsed"]}
            print("LangChain pipeline:", json.dumps(result["langchain"]), flush=True)
        if args.redis:
            with ServedProduct(env={**SERVED_ENV, "SIROCCO_REDIS_URL": args.redis}) as product:
                result["served_redis"] = served_ingest(product, folder, len(docs), n_chunks)
            print("served, Redis broker:", json.dumps(result["served_redis"]), flush=True)
        # The product as make run starts it: ingest through the CLI, then search.
        with ServedProduct(env=SERVED_ENV) as product:
            result["served"] = served_ingest(product, folder, len(docs), n_chunks)
            print("served, embedded broker:", json.dumps(result["served"]), flush=True)
            result["sizes"] = search_series(product, local, copies, queries, args.chat)
    report(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


def search_series(product: ServedProduct, local: dict[str, Any], copies: list[int],
                  queries: list[str], chat_n: int) -> list[dict[str, Any]]:
    """Step 2 at each size: the ingested corpus, then perturbed copies added."""
    sizes = []
    have = 1
    rng = random.Random(7)
    for target in copies:
        for copy in range(have, target):
            add_copies(product, local["chunks_stored"], local["vectors"], copy, rng)
        have = max(have, target)
        sizes.append(measure_size(product, queries, chat_n, local["chunks"] * have))
    return sizes


def report(result: dict[str, Any]) -> None:
    ip, sv = result["in_process"], result["served"]
    print("\n== ingestion (docs/s; chunks/s)")
    print(f"in-process {ip['docs_s']:.2f}; {ip['chunks_s']:.1f}")
    print(f"served (embedded) {sv['docs_s']:.2f}; {sv['chunks_s']:.1f}  "
          f"ratio served/in-process {sv['docs_s'] / ip['docs_s']:.2f}x (target >= 0.8)")
    if "served_redis" in result:
        rd = result["served_redis"]
        print(f"served (Redis) {rd['docs_s']:.2f}; {rd['chunks_s']:.1f}  "
              f"ratio {rd['docs_s'] / ip['docs_s']:.2f}x")
    if "langchain" in result:
        lc = result["langchain"]
        print(f"LangChain {lc['docs_s']:.2f}; {lc['chunks_s']:.1f}  served/LangChain chunks/s "
              f"{sv['chunks_s'] / lc['chunks_s']:.2f}x (target >= 2)")
    print("\n== search through the served API (ms)")
    print("chunks | 1 client p50/p95 | 16 clients p50/p95 | p95(16)/p50(1) | chat span p50 "
          "| RSS MiB | disk KiB/chunk")
    for row in result["sizes"]:
        one, many = row["search_1"], row["search_16"]
        span = row["chat_span"].get("p50_ms")
        print(f"{row['chunks']} | {one['p50_ms']:.1f}/{one['p95_ms']:.1f} | "
              f"{many['p50_ms']:.1f}/{many['p95_ms']:.1f} | {many['p95_ms'] / one['p50_ms']:.2f}x "
              f"| {span if span is None else round(span, 1)} | {row['rss_mib']:.0f} | "
              f"{row['disk_per_chunk_kib']:.2f}")
    print("\nthroughput (searches/s), product CPU per search (ms), cores it kept busy and the "
          "load generator's CPU per search (ms), 1 client | 16 clients")
    for row in result["sizes"]:
        one, many = row["search_1"], row["search_16"]
        print(f"{row['chunks']} | {one['per_s']:.1f}/s, {one['product_cpu_ms']:.1f} ms, "
              f"{one['product_cores_busy']:.2f}, {one['client_cpu_ms']:.1f} ms | "
              f"{many['per_s']:.1f}/s, {many['product_cpu_ms']:.1f} ms, "
              f"{many['product_cores_busy']:.2f}, {many['client_cpu_ms']:.1f} ms")
    first, last = result["sizes"][0], result["sizes"][-1]
    print(f"p50 at {last['chunks']} / p50 at {first['chunks']}: "
          f"{last['search_1']['p50_ms'] / first['search_1']['p50_ms']:.2f}x (target <= 2)")


if __name__ == "__main__":
    main()
