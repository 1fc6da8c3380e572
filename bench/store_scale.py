"""The embedded vector store as the corpus grows: qdrant-edge (``EdgeStore``,
the default) against qdrant-client's local mode (``QdrantStore``, the peer and
the former default), on the same random points, in one run.

    .venv/bin/python bench/store_scale.py                       # 13k and 65k points
    .venv/bin/python bench/store_scale.py --sizes 13000 65000 260000
    .venv/bin/python bench/store_scale.py --quick                # smoke check

Points: random 384-d unit vectors, each with a 40-word text (Zipf over 2,000
words: BM25's sparse vector) in one of four tenants. A query is a hybrid search
(dense + BM25 prefetches fused, as the product searches) for a random vector
and three words, filtered by tenant and ACL (a caller), top 10. Query embedding
is not included: this is the store. Measured per size:

- edge, in the owner process: one client, p50/p95 over ``--queries`` queries;
- edge, from another process over the owner's socket: one client, then
  ``--concurrency`` threads at once (each query's latency; p95);
- local mode as served (a client opened and closed per operation under the
  lock: what the API did before) and held open (``hold()``, the figure
  ``docs/benchmarks.md`` recorded before), fewer queries (``--peer-queries``)
  since each one loads the collection.

Targets (store level): p50 at the largest size <= 2x p50 at 13k and <= 100 ms;
16 concurrent p95 <= 3x single p50.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DIM = 384
TENANTS = ("acme", "globex", "initech", "umbrella")

#: Run in another process: a client of the owner; prints one JSON line.
CLIENT = """
import json, sys, threading, time
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/bench"]
from store_scale import measure, queries, settings_for
from retrieval.edge_store import EdgeStore
n, concurrency = int(sys.argv[3]), int(sys.argv[4])
store = EdgeStore(settings_for(sys.argv[2]))
assert not store.is_owner
qs = queries(n, seed=7)
single = measure(store, qs, 1)
many = measure(store, qs, concurrency)
print(json.dumps({"single": single, "concurrent": many}))
"""


def settings_for(data_dir: str) -> Any:
    from sirocco.settings import Settings

    return Settings(data_dir=Path(data_dir), qdrant={"collection": "scale",
                                                     "lock_timeout_s": 600})


def percentiles(ms: list[float]) -> tuple[float, float]:
    return statistics.median(ms), statistics.quantiles(ms, n=20)[18]


def _words(rng: random.Random) -> tuple[list[str], list[float]]:
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(4, 9)))
             for _ in range(2000)]
    return words, [1 / (i + 1) for i in range(len(words))]


def queries(n: int, *, seed: int) -> list[dict[str, Any]]:
    """``n`` hybrid queries: a vector, three words, a caller."""
    import numpy as np

    from sirocco.principal import Principal

    rng = random.Random(seed)
    words, _ = _words(random.Random(0))
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [{"vector": vectors[i].tolist(), "text": " ".join(rng.sample(words[:300], 3)),
             "caller": Principal(TENANTS[i % 4], user="ana", groups=("hr",))}
            for i in range(n)]


def run_query(store: Any, q: dict[str, Any]) -> None:
    from retrieval.store import SearchFilter

    store.search(q["vector"], text=q["text"], top_k=10, mode="hybrid",
                 filter=SearchFilter(caller=q["caller"]))


def measure(store: Any, qs: list[dict[str, Any]], concurrency: int) -> list[float]:
    """p50 and p95 ms of ``qs`` run by ``concurrency`` threads at once (after a
    warm-up of 10)."""
    for q in qs[:10]:
        run_query(store, q)
    ms: list[float] = []
    guard = threading.Lock()

    def worker(part: list[dict[str, Any]]) -> None:
        for q in part:
            t0 = time.perf_counter()
            run_query(store, q)
            with guard:
                ms.append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=worker, args=(qs[i::concurrency],))
               for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return list(percentiles(ms))


def load(store: Any, n: int, *, seed: int = 1) -> float:
    """Upsert ``n`` random chunks in batches of 1,024; seconds taken."""
    import numpy as np

    from sirocco.types import Chunk

    rng = random.Random(seed)
    words, weights = _words(random.Random(0))
    gen = np.random.default_rng(seed)
    started = time.perf_counter()
    for start in range(0, n, 1024):
        size = min(1024, n - start)
        vectors = gen.standard_normal((size, DIM)).astype("float32")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        chunks = [Chunk(doc_id=f"d{start + i}", chunk_index=0,
                        text=" ".join(rng.choices(words, weights, k=40)), title="",
                        source="", start_char=0, end_char=1, tenant=TENANTS[(start + i) % 4],
                        acl=(rng.choice(("*", "group:hr", "user:bo")),))
                  for i in range(size)]
        store.upsert(chunks, vectors.tolist())
    return time.perf_counter() - started


def bench_edge(settings: Any, n: int, args: argparse.Namespace) -> dict[str, Any]:
    from retrieval.edge_store import EdgeStore

    store = EdgeStore(settings)
    load_s = load(store, n)
    t0 = time.perf_counter()
    store.optimize()
    index_s = time.perf_counter() - t0
    assert store.is_owner and store.count() == n
    qs = queries(args.queries, seed=7)
    out: dict[str, Any] = {"load_s": load_s, "index_s": index_s,
                           "owner": measure(store, qs, 1),
                           "owner_concurrent": measure(store, qs, args.concurrency)}
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, str(REPO), str(settings.data_dir),
         str(args.queries), str(args.concurrency)],
        capture_output=True, text=True, check=True, cwd=REPO)
    remote = json.loads(proc.stdout.strip().splitlines()[-1])
    out["socket"], out["socket_concurrent"] = remote["single"], remote["concurrent"]
    store.close()
    return out


def bench_local(settings: Any, n: int, args: argparse.Namespace) -> dict[str, Any]:
    from retrieval.qdrant_store import QdrantStore

    store = QdrantStore(settings)
    with store.hold():
        load_s = load(store, n)
        qs = queries(args.peer_queries + 10, seed=7)
        held = measure(store, qs, 1)
    return {"load_s": load_s, "held": held, "served": measure(store, qs, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[13000, 65000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--peer-queries", type=int, default=10,
                    help="queries per local-mode measurement (each loads the collection)")
    ap.add_argument("--peer-max", type=int, default=65000,
                    help="largest size the local-mode peer is measured at")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--quick", action="store_true",
                    help="300 and 600 points, 30 queries: a smoke check")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.queries, args.peer_queries, args.peer_max = [300, 600], 30, 3, 300
        print("--quick: 300 and 600 points: a smoke check, not a result")

    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sirocco-store-scale-") as tmp:
        for n in args.sizes:
            settings = settings_for(str(Path(tmp) / f"n{n}"))
            results[n] = {"edge": bench_edge(settings, n, args)}
            if n <= args.peer_max:
                results[n]["local"] = bench_local(settings, n, args)
            report(n, results[n], args)
    summary(results, args)


def report(n: int, r: dict[str, Any], args: argparse.Namespace) -> None:
    e = r["edge"]
    print(f"\n{n:,} points: edge load {e['load_s']:.1f} s + index {e['index_s']:.1f} s")
    rows = [("edge, in the owner", e["owner"]),
            (f"edge, in the owner, {args.concurrency} concurrent", e["owner_concurrent"]),
            ("edge, other process over the socket", e["socket"]),
            (f"edge, over the socket, {args.concurrency} concurrent", e["socket_concurrent"])]
    if "local" in r:
        loc = r["local"]
        print(f"  local mode load {loc['load_s']:.1f} s")
        rows += [("local mode, held open (hold())", loc["held"]),
                 ("local mode, as served (open per operation)", loc["served"])]
    for name, (p50, p95) in rows:
        print(f"  {name:<52} p50 {p50:9.2f} ms  p95 {p95:9.2f} ms")
    if "local" in r:
        base = e["socket"][0]
        print(f"  local served p50 / edge socket p50: {r['local']['served'][0] / base:.1f}x; "
              f"local held p50 / edge owner p50: {r['local']['held'][0] / e['owner'][0]:.1f}x")


def summary(results: dict[int, dict[str, Any]], args: argparse.Namespace) -> None:
    sizes = sorted(results)
    small, big = results[sizes[0]]["edge"], results[sizes[-1]]["edge"]
    print("\nTargets (store level, hybrid search with tenant + ACL filter, no embedding):")
    for where in ("owner", "socket"):
        ratio = big[where][0] / small[where][0]
        ok = ratio <= 2 and big[where][0] <= 100
        print(f"  {where}: p50 at {sizes[-1]:,} = {big[where][0]:.2f} ms, {ratio:.2f}x p50 at "
              f"{sizes[0]:,} -> {'met' if ok else 'NOT met'} (<= 2x and <= 100 ms)")
        for n in sizes:
            e = results[n]["edge"]
            ratio = e[f"{where}_concurrent"][1] / e[where][0]
            print(f"  {where}, {n:,}: {args.concurrency} concurrent p95 "
                  f"{e[f'{where}_concurrent'][1]:.2f} ms = {ratio:.2f}x single p50 -> "
                  f"{'met' if ratio <= 3 else 'NOT met'} (<= 3x)")


if __name__ == "__main__":
    main()
