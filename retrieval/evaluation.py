"""Retrieval evaluation on BEIR-format data: dense, sparse and hybrid, side by side.

A dataset folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``),
``queries.jsonl`` (``_id``, ``text``; any ``metadata`` is never read: in
SciFact it holds the gold labels) and ``qrels/<split>.tsv``. The corpus is
chunked and embedded by the product's own pipeline (callables given by the
caller) into a temporary collection; each query retrieves chunks, a document
ranks by its best chunk, and ir-measures scores the runs (nDCG@10,
Recall@100, MRR@10). Latency is per query, embedding included.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval.store import SEARCH_MODES, SearchMode
from sirocco.errors import InvalidInputError
from sirocco.types import Chunk, SearchHit

logger = logging.getLogger(__name__)

MEASURES = ("nDCG@10", "R@100", "RR@10")
#: Chunks fetched per query: enough distinct documents for Recall@100.
CHUNK_DEPTH = 300

ChunkFn = Callable[[str, str, str], list[Chunk]]
EmbedChunks = Callable[[list[Chunk]], list[list[float]]]
EmbedQuery = Callable[[str], list[float]]


@dataclass(slots=True)
class Dataset:
    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


@dataclass(slots=True)
class ModeReport:
    metrics: dict[str, float]
    latency_ms_p50: float
    latency_ms_p95: float


@dataclass(slots=True)
class Report:
    dataset: str
    split: str
    documents: int
    chunks: int
    queries: int
    index_seconds: float
    modes: dict[str, ModeReport] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("dataset", "split", "documents", "chunks",
                                             "queries", "index_seconds", "settings")}
        out["modes"] = {m: {"metrics": r.metrics, "latency_ms_p50": r.latency_ms_p50,
                            "latency_ms_p95": r.latency_ms_p95} for m, r in self.modes.items()}
        return out


def load_beir(folder: Path, split: str = "test") -> Dataset:
    """The corpus, the queries that have judgements in ``split``, and the qrels.
    ``InvalidInputError`` names what is missing."""
    folder = Path(folder)
    paths = [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise InvalidInputError(f"not a BEIR dataset folder: missing {', '.join(missing)}")
    corpus: dict[str, tuple[str, str]] = {}
    with paths[0].open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                corpus[str(row["_id"])] = (row.get("title") or "", row.get("text") or "")
    qrels: dict[str, dict[str, int]] = {}
    with paths[2].open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            cols = line.rstrip("\n").split("\t")
            if i == 0 and not cols[-1].lstrip("-").isdigit():
                continue  # header
            if len(cols) >= 3:
                qrels.setdefault(cols[0], {})[cols[1]] = int(cols[2])
    queries: dict[str, str] = {}
    with paths[1].open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if str(row["_id"]) in qrels:
                    queries[str(row["_id"])] = row["text"]  # only the text, never metadata
    return Dataset(corpus=corpus, queries=queries, qrels=qrels)


def index_corpus(
    data: Dataset, store: Any, *, chunk: ChunkFn, embed: EmbedChunks,
    cache: Path | None = None, batch: int = 256,
    embedded_text: Callable[[Chunk], str] | None = None, model_tag: str = "",
) -> int:
    """Chunk, embed and upsert the corpus into ``store``; returns the chunk
    count. With ``cache`` (a file), vectors computed once are reused while the
    key holds: ``model_tag`` (which model and export) and each chunk's id and
    the text ``embed`` reads for it (``embedded_text``; the chunk's text if
    not given)."""
    import numpy as np

    chunks = [c for doc_id, (title, text) in data.corpus.items()
              for c in chunk(doc_id, title, text)]
    text_of = embedded_text or (lambda c: c.text)
    key = hashlib.sha256("\n".join(
        [model_tag, *(f"{c.id}:{text_of(c)}" for c in chunks)]).encode()).hexdigest()
    vectors: Any = None
    if cache is not None and cache.is_file():
        saved = np.load(cache)
        if str(saved["key"]) == key:
            vectors = saved["vectors"]
            logger.info("reusing cached vectors", extra={"cache": str(cache)})
    if vectors is None:
        vectors = np.asarray(embed(chunks), dtype=np.float32)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, key=key, vectors=vectors)
    for i in range(0, len(chunks), batch):
        store.upsert(chunks[i : i + batch], vectors[i : i + batch].tolist())
    return len(chunks)


def run_queries(
    data: Dataset, store: Any, mode: SearchMode, *, embed_query: EmbedQuery,
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """The document run (query -> doc -> score, best chunk per document) and
    the latency of each query in milliseconds."""
    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    for qid, text in data.queries.items():
        started = time.perf_counter()
        vector = embed_query(text) if mode != "sparse" else None
        hits = store.search(vector, top_k=CHUNK_DEPTH, text=text, mode=mode)
        latencies.append((time.perf_counter() - started) * 1000)
        run[qid] = documents_by_best_chunk(hits)
    return run, latencies


def documents_by_best_chunk(hits: Sequence[SearchHit]) -> dict[str, float]:
    """Each document once, scored so that its best chunk's rank orders it."""
    scores: dict[str, float] = {}
    for rank, h in enumerate(hits):
        scores.setdefault(h.doc_id, float(len(hits) - rank))
    return scores


def score(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
          ) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 over the queries, by ir-measures."""
    try:
        import ir_measures
    except ImportError:
        from sirocco.errors import ConfigError

        raise ConfigError("ir-measures is not installed: `pip install ir-measures`") from None
    measures = [ir_measures.parse_measure(m) for m in MEASURES]
    agg = ir_measures.calc_aggregate(measures, qrels, run)
    return {str(m): round(float(agg[m]), 4) for m in measures}


def evaluate(
    data: Dataset, store: Any, *, name: str, split: str, chunk: ChunkFn, embed: EmbedChunks,
    embed_query: EmbedQuery, modes: Sequence[SearchMode] = SEARCH_MODES,
    cache: Path | None = None, settings: dict[str, Any] | None = None,
    embedded_text: Callable[[Chunk], str] | None = None, model_tag: str = "",
) -> Report:
    """Index ``data`` into ``store`` (an empty collection) and score each mode;
    ``cache``, ``embedded_text`` and ``model_tag`` as in ``index_corpus``."""
    started = time.perf_counter()
    n_chunks = index_corpus(data, store, chunk=chunk, embed=embed, cache=cache,
                            embedded_text=embedded_text, model_tag=model_tag)
    report = Report(dataset=name, split=split, documents=len(data.corpus), chunks=n_chunks,
                    queries=len(data.queries), index_seconds=round(time.perf_counter() - started,
                                                                   1),
                    settings=settings or {})
    for mode in modes:
        run, latencies = run_queries(data, store, mode, embed_query=embed_query)
        q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
        report.modes[mode] = ModeReport(metrics=score(data.qrels, run),
                                        latency_ms_p50=round(statistics.median(latencies), 2),
                                        latency_ms_p95=round(q[18], 2))
    return report


def write_chart(report: Report, path: Path) -> None:
    """A bar chart of the metrics per mode (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(report.modes)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    width = 0.8 / max(1, len(modes))
    for i, mode in enumerate(modes):
        values = [report.modes[mode].metrics[m] for m in MEASURES]
        xs = [j + i * width for j in range(len(MEASURES))]
        bars = ax.bar(xs, values, width, label=mode)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(MEASURES))], MEASURES)
    ax.set_ylim(0, 1)
    ax.set_title(f"{report.dataset} ({report.split}, {report.queries} queries, "
                 f"{report.documents} docs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
