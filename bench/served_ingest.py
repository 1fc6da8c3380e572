"""Ingestion through the served product against the in-process pipeline, on
the same SciFact Markdown files, in one run.

    .venv/bin/python bench/served_ingest.py --limit 1000
    .venv/bin/python bench/served_ingest.py --limit 1000 --redis redis://127.0.0.1:6379/12

1. in-process: ``bench/ingest.py``'s Sirocco run (register, then the parse and
   embed stages in this process, no broker): the peer.
2. served, embedded defaults: ``sirocco up`` as ``make run`` starts it (API,
   engine, one worker per stage on the embedded SQLite broker) in a fresh data
   folder, then ``sirocco ingest FOLDER`` as a user would; timed by the CLI run
   (registration, enqueueing, and waiting until the job has finished).
3. served with Redis (``--redis URL``): the same with ``SIROCCO_REDIS_URL``.

Prints docs/s and chunks/s of each and the ratio served / in-process; the
target is served (embedded default) >= 0.8x in-process docs/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest import DEFAULT_DATA, QUICK_DATA, load_corpus, run_sirocco  # noqa: E402
from bench.product import ServedProduct  # noqa: E402


def write_markdown(docs: list[dict[str, str]], folder: Path) -> None:
    """One ``# title`` + abstract file per document, as bench/ingest.py writes them."""
    folder.mkdir(parents=True)
    for d in docs:
        (folder / f"{d['id']}.md").write_text(f"# {d['title']}\n\n{d['text']}\n", "utf-8")


def served(folder: Path, env: dict[str, str]) -> dict[str, float]:
    """``sirocco up`` with ``env``, then ``sirocco ingest folder``: wall seconds and
    the job's documents and chunks (from the product's own database)."""
    with ServedProduct(env=env) as product:
        seconds = product.ingest(folder)
        from sqlalchemy import create_engine, text

        engine = create_engine(f"sqlite:///{product.data_dir / 'sirocco.db'}")
        with engine.connect() as conn:
            docs, chunks = conn.execute(text(
                "SELECT count(*), coalesce(sum(chunk_count), 0) FROM documents "
                "WHERE status = 'done'")).one()
        engine.dispose()
    return {"elapsed": seconds, "docs": docs, "chunks": chunks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=1000, help="the first N documents")
    ap.add_argument("--redis", default=None, help="also run served with this Redis URL")
    ap.add_argument("--skip-inprocess", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="the 10-document fixture in tests/data: a smoke check, not a result")
    args = ap.parse_args()
    if args.quick:
        args.data, args.limit = QUICK_DATA, None

    docs = load_corpus(args.data, args.limit)
    work = Path(tempfile.mkdtemp(prefix="served-ingest-"))
    results: dict[str, dict[str, float]] = {}
    try:
        if not args.skip_inprocess:
            (work / "inprocess").mkdir()
            run = run_sirocco(docs, work / "inprocess", None)
            results["in-process"] = {"elapsed": run["elapsed"], "docs": len(docs),
                                     "chunks": run["chunks"]}
        write_markdown(docs, work / "served-md")
        results["served, embedded broker"] = served(work / "served-md", {})
        if args.redis:
            results["served, Redis"] = served(work / "served-md", {
                "SIROCCO_REDIS_URL": args.redis,
                "SIROCCO_CELERY__QUEUE_PREFIX": f"bench-{uuid.uuid4().hex[:8]}"})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    peer = results.get("in-process")
    print(f"\nSciFact, first {len(docs)} documents (--limit {args.limit}), "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'path':<26} {'docs':>6} {'chunks':>7} {'seconds':>8} {'docs/s':>7} "
          f"{'chunks/s':>8} {'x in-process':>12}")
    for name, r in results.items():
        dps = r["docs"] / r["elapsed"]
        ratio = f"{dps / (peer['docs'] / peer['elapsed']):.2f}x" if peer else "-"
        print(f"{name:<26} {r['docs']:>6} {r['chunks']:>7} {r['elapsed']:>8.1f} {dps:>7.1f} "
              f"{r['chunks'] / r['elapsed']:>8.1f} {ratio:>12}")
    embedded = results["served, embedded broker"]
    if peer:
        ratio = (embedded["docs"] / embedded["elapsed"]) / (peer["docs"] / peer["elapsed"])
        print(f"served (embedded default) / in-process docs/s: {ratio:.2f}x (target >= 0.8x)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
