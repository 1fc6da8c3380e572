"""Helpers of ``bench/served.py``: record what the in-process pipeline stored,
grow the served store with perturbed copies, and read the product's memory, CPU and
disk. Nothing here is imported by the product."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
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


def _product_processes(product: ServedProduct) -> list[Any]:
    """``sirocco up`` and every process under it (psutil), [] when not started."""
    import psutil

    proc = getattr(product, "_proc", None)
    if proc is None:
        return []
    root = psutil.Process(proc.pid)
    return [root, *root.children(recursive=True)]


def _per_process(product: ServedProduct, read: Callable[[Any], float]) -> dict[int, float]:
    import psutil

    out: dict[int, float] = {}
    for p in _product_processes(product):
        try:
            out[p.pid] = read(p)
        except psutil.Error:  # exited between the listing and the read
            continue
    return out


def product_rss_mib(product: ServedProduct) -> float:
    """Resident memory of ``sirocco up`` and every process under it, MiB."""
    return sum(_per_process(product, lambda p: p.memory_info().rss).values()) / 2**20


def product_cpu_s(product: ServedProduct) -> dict[int, float]:
    """CPU seconds (user + system) used so far by ``sirocco up`` and each
    process under it, by pid; ``cpu_used`` turns two readings into the
    seconds spent between them."""
    return _per_process(product, lambda p: p.cpu_times().user + p.cpu_times().system)


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two ``product_cpu_s`` readings: a process that
    started since counts from zero, one that exited since (a task's child
    process) only up to the first reading, never negatively."""
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def disk_per_chunk(data_dir: Path, chunks: int) -> float:
    """KiB on disk under the data folder's store folders (``qdrant*``) per chunk."""
    size = 0
    for top in data_dir.iterdir():
        if top.name.startswith("qdrant"):
            size += sum(f.stat().st_size for f in top.rglob("*") if f.is_file())
    return size / 1024 / max(chunks, 1)
