"""Helpers of ``bench/served.py``: record what the in-process pipeline stored,
grow the served store with perturbed copies, and read the product's memory and
disk. Nothing here is imported by the product."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.product import ServedProduct

BATCH = 256
NOISE = 0.02


class RecordingStore:
    """A ``Store`` that passes everything on and keeps the upserted chunks and
    vectors in ``sink`` (``chunks``, ``vectors``)."""

    def __init__(self, inner: Any, sink: dict[str, Any]) -> None:
        self._inner = inner
        self._sink = sink
        sink.setdefault("chunks", [])
        sink.setdefault("vectors", [])

    def upsert(self, chunks: Sequence[Any], vectors: Sequence[Sequence[float]]) -> None:
        self._inner.upsert(chunks, vectors)
        self._sink["chunks"].extend(chunks)
        self._sink["vectors"].extend([list(v) for v in vectors])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _perturbed(vector: Sequence[float], rng: random.Random) -> list[float]:
    moved = [x + rng.gauss(0.0, NOISE) for x in vector]
    norm = math.sqrt(sum(x * x for x in moved)) or 1.0
    return [x / norm for x in moved]


def add_copies(product: ServedProduct, chunks: Sequence[Any], vectors: Sequence[Sequence[float]],
               copy: int, rng: random.Random) -> None:
    """Copy number ``copy`` of the corpus into the served product's store, through
    the ``Store`` port (the product keeps serving): its own document ids, a text
    suffix (sparse vectors differ) and noise on every dense vector."""
    from retrieval.factory import create_store
    from sirocco.settings import Settings

    settings = Settings(env="dev", data_dir=product.data_dir)
    store = create_store(settings)
    try:
        for start in range(0, len(chunks), BATCH):
            part = chunks[start:start + BATCH]
            copied = [replace(c, doc_id=f"{c.doc_id}-copy{copy}",
                              text=f"{c.text} (copy {copy})") for c in part]
            store.upsert(copied, [_perturbed(v, rng) for v in vectors[start:start + BATCH]])
    finally:
        store.close()


def product_rss_mib(product: ServedProduct) -> float:
    """Resident memory of ``sirocco up`` and every process under it, MiB."""
    import psutil

    proc = getattr(product, "_proc", None)
    if proc is None:
        return 0.0
    root = psutil.Process(proc.pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def product_cpu_s(product: ServedProduct) -> float:
    """CPU seconds (user + system) used so far by ``sirocco up`` and every
    process under it; the difference over a phase divided by its wall time is
    how many cores the product kept busy."""
    import psutil

    proc = getattr(product, "_proc", None)
    if proc is None:
        return 0.0
    root = psutil.Process(proc.pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def disk_per_chunk(data_dir: Path, chunks: int) -> float:
    """KiB on disk under the data folder's store folders (``qdrant*``) per chunk."""
    size = 0
    for top in data_dir.iterdir():
        if top.name.startswith("qdrant"):
            size += sum(f.stat().st_size for f in top.rglob("*") if f.is_file())
    return size / 1024 / max(chunks, 1)
