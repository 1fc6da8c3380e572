"""Answer quality and speed of the bundled model per dtype, through the served
product: ``sirocco up`` on embedded defaults, ``sirocco ingest`` of the shared
documents, then ``POST /api/chat`` for each question of a QA set.

    .venv/bin/python bench/dtype_quality.py                   # float32 vs bfloat16
    .venv/bin/python bench/dtype_quality.py --quick           # examples/docs, 2 questions

The same data folder (one ingestion) is served once per dtype
(``SIROCCO_LLM__DTYPE``); the peer is float32, the dtype of the reference
answers (``llm.model_check``). Per dtype: keyword match (any of the expected
keywords in the answer), expected source among the sources (hit@k), answers
with a model-written citation, answers equal to float32's, seconds per answer
and answer tokens/s (completion tokens over the request's wall time, retrieval
and prompt included). The QA set (``bench/data/shared-docs-qa.jsonl``) names
documents of ``../shared/data/docs``; it ships no document.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.product import ServedProduct  # noqa: E402

DEFAULT_DOCS = REPO.parent / "shared" / "data" / "docs"
DEFAULT_QA = REPO / "bench" / "data" / "shared-docs-qa.jsonl"
QUICK_QA = [
    {"id": "zephyr", "question": "What is the Zephyr project code?",
     "sources": ["zephyr-project.md"], "keywords": ["ZX-4471"]},
    {"id": "travel", "question": "Which class do I book for a short flight?",
     "sources": ["travel-policy.md"], "keywords": ["economy"]},
]


def load_qa(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def score(item: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """One answer against its QA item."""
    answer = result["answer"]
    names = {Path(s.get("source") or "").name for s in result.get("sources", [])}
    usage = result.get("usage") or {}
    return {
        "answer": answer,
        "keyword": any(k.lower() in answer.lower() for k in item["keywords"]),
        "source_hit": bool(names & set(item["sources"])),
        "cited": any(not c.get("inferred") for c in result.get("citations", [])),
        "seconds": result["_seconds"],
        "tokens": int(usage.get("completion_tokens") or 0),
    }


def run_dtype(data_dir: Path, dtype: str, qa: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with ServedProduct({"SIROCCO_LLM__DTYPE": dtype}, data_dir=data_dir,
                       log=data_dir / f"served-{dtype}.log") as product:
        return [score(item, product.chat(item["question"])) for item in qa]


def summary(rows: list[dict[str, Any]], peer: list[dict[str, Any]]) -> dict[str, float]:
    n = len(rows)
    return {
        "keyword match": sum(r["keyword"] for r in rows) / n,
        "expected source among sources": sum(r["source_hit"] for r in rows) / n,
        "model-written citation": sum(r["cited"] for r in rows) / n,
        "answers equal to float32's": sum(r["answer"] == p["answer"]
                                          for r, p in zip(rows, peer, strict=True)) / n,
        "s per answer (median)": statistics.median(r["seconds"] for r in rows),
        "answer tokens/s": sum(r["tokens"] for r in rows) / sum(r["seconds"] for r in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=Path, default=DEFAULT_DOCS)
    ap.add_argument("--qa", type=Path, default=DEFAULT_QA)
    ap.add_argument("--dtypes", default="float32,bfloat16", help="float32 (the peer) first")
    ap.add_argument("--quick", action="store_true", help="examples/docs, 2 questions")
    args = ap.parse_args()
    qa = QUICK_QA if args.quick else load_qa(args.qa)
    docs = REPO / "examples" / "docs" if args.quick else args.docs
    if not docs.is_dir():
        sys.exit(f"{docs} not found (see ../shared/data/README.md)")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if dtypes[0] != "float32":
        ap.error("float32 (the reference dtype) must come first: it is the peer")
    if args.quick:
        print("--quick: examples/docs, 2 questions: a smoke check, not a benchmark figure")
    data_dir = Path(tempfile.mkdtemp(prefix="sirocco-dtype-"))
    try:
        with ServedProduct(data_dir=data_dir, log=data_dir / "ingest.log") as product:
            seconds = product.ingest(docs)
        print(f"ingested {docs} in {seconds:.0f} s through `sirocco ingest` (served product)")
        results = {d: run_dtype(data_dir, d, qa) for d in dtypes}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    table = {d: summary(rows, results["float32"]) for d, rows in results.items()}
    print(f"\n{len(qa)} questions, {docs}")
    print("| metric | " + " | ".join(dtypes) + " |\n|---|" + "---|" * len(dtypes))
    for metric in table[dtypes[0]]:
        share = metric not in ("s per answer (median)", "answer tokens/s")
        cells = [f"{100 * table[d][metric]:.0f}%" if share else f"{table[d][metric]:.2f}"
                 for d in dtypes]
        print(f"| {metric} | " + " | ".join(cells) + " |")
    for d in dtypes[1:]:
        print(f"{d} / float32: keyword match {table[d]['keyword match']:.2f} vs "
              f"{table['float32']['keyword match']:.2f}; answer tokens/s x"
              f"{table[d]['answer tokens/s'] / table['float32']['answer tokens/s']:.2f}")
    for i, item in enumerate(qa):
        print(f"\n[{item['id']}] {item['question']}")
        for d in dtypes:
            r = results[d][i]
            mark = "ok " if r["keyword"] else "-- "
            print(f"  {d:9} {mark}{r['answer'][:160]!r}")


if __name__ == "__main__":
    main()
