"""Embedding batch size: texts/s of each backend at several batch sizes, on
SciFact texts cut to chunk length, against the old default of 64 (the peer).

    .venv/bin/python bench/embed_batch.py                                # 800 texts, 3 rounds
    .venv/bin/python bench/embed_batch.py --backends onnx-int8 --sizes 8,16,64

Texts: each SciFact ``title + abstract``, cut into 800-character pieces every
700 characters (our chunks are ~170 tokens, about that long). Each backend is
built once through ``ingest.embedding.base.create_embedder``; every round runs
each size in turn over the same texts (the embedder sorts them by length and
pads within a batch, as in ingestion), so load from other processes falls on
all sizes alike. Reported: the median texts/s over the rounds, and its ratio
to batch size 64 in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"
#: --quick: the 10-document BEIR fixture the tests ship (same code paths, seconds).
QUICK_DATA = REPO / "tests" / "data" / "beir-mini"
PEER_SIZE = 64


def chunk_like_texts(data: Path, n: int) -> list[str]:
    texts: list[str] = []
    with (data / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            text = f"{row['title'].strip()}\n\n{row['text'].strip()}"
            texts += [text[i:i + 800] for i in range(0, len(text), 700)]
            if len(texts) >= n:
                break
    return texts[:n]


def measure(backend: str, sizes: list[int], texts: list[str], rounds: int) -> dict[int, float]:
    from ingest.embedding.base import create_embedder
    from sirocco.settings import Settings

    settings = Settings(env="test", models_dir=REPO / "var" / "models",
                        embedding={"backend": backend})
    embedder = create_embedder(settings)
    embedder.embed_documents(texts[:32])  # warm-up
    runs: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(rounds):
        for size in sizes:
            embedder._batch_size = size  # noqa: SLF001 - the knob under test
            started = time.perf_counter()
            embedder.embed_documents(texts)
            runs[size].append(len(texts) / (time.perf_counter() - started))
    return {size: statistics.median(v) for size, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--backends", default="onnx-int8,torch-bf16")
    ap.add_argument("--sizes", default="8,16,32,64")
    ap.add_argument("--texts", type=int, default=800)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="tests/data/beir-mini, one round: a smoke check")
    args = ap.parse_args()
    if args.quick:
        args.data, args.rounds, args.texts = QUICK_DATA, 1, 40
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not (args.data / "corpus.jsonl").is_file():
        sys.exit(f"{args.data}/corpus.jsonl not found (see ../shared/data/README.md)")
    sizes = sorted({int(s) for s in args.sizes.split(",")} | {PEER_SIZE})
    texts = chunk_like_texts(args.data, args.texts)
    print(f"{len(texts)} texts, {args.rounds} rounds, cores: {os.cpu_count()}; "
          f"peer: batch size {PEER_SIZE}")
    for backend in args.backends.split(","):
        per_s = measure(backend, sizes, texts, args.rounds)
        for size in sizes:
            print(f"{backend:11s} batch {size:4d}: {per_s[size]:7.1f} texts/s  "
                  f"x{per_s[size] / per_s[PEER_SIZE]:.2f} of batch {PEER_SIZE}")


if __name__ == "__main__":
    main()
