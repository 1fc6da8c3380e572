"""``sirocco eval retrieval``: the retrieval evaluation on BEIR-format data,
wired to the product's own chunker and embedder (``retrieval.evaluation``)."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sirocco.settings import Settings, get_settings

eval_app = typer.Typer(help="Evaluation.", no_args_is_help=True)
console = Console()


def product_pipeline(settings: Settings):  # type: ignore[no-untyped-def]
    """The product's chunker and embedder as the evaluation's callables:
    (chunk(doc_id, title, text), embed(chunks), embedder)."""
    from ingest.chunker import chunk_document
    from ingest.embedding.base import create_embedder
    from ingest.parsers import parse_bytes
    from ingest.pipeline import chunk_sizes, embedding_text

    embedder = create_embedder(settings)
    size, overlap = chunk_sizes(settings, embedder)

    def chunk(doc_id: str, title: str, text: str):  # type: ignore[no-untyped-def]
        parsed = parse_bytes(f"# {title}\n\n{text}\n".encode(), name=f"{doc_id}.md")
        return chunk_document(parsed, doc_id=doc_id, source=doc_id, tokenizer=embedder.tokenizer,
                              chunk_tokens=size, overlap_tokens=overlap)

    def embed(chunks):  # type: ignore[no-untyped-def]
        return embedder.embed_documents([embedding_text(c) for c in chunks])

    return chunk, embed, embedder


def embedder_tag(embedder: Any) -> str:
    """Which weights and export produce the vectors (a cache key part): the
    ONNX file (its folder name carries the export's fingerprint) or the model id."""
    return str(getattr(embedder, "model_file", "") or embedder.model_id)


@eval_app.command("retrieval")
def eval_retrieval(
    dataset: Annotated[Path, typer.Option(help="BEIR folder: corpus.jsonl, queries.jsonl, "
                                               "qrels/<split>.tsv.")],
    split: Annotated[str, typer.Option(help="Which qrels file.")] = "test",
    modes: Annotated[str, typer.Option(help="Comma-separated: dense, sparse, hybrid.")] = (
        "dense,sparse,hybrid"),
    out: Annotated[Path, typer.Option(help="Folder for report.json and report.png.")] = Path(
        "var/eval"),
    cache: Annotated[bool, typer.Option(help="Reuse the corpus vectors of an earlier run "
                                             "(same texts, same model).")] = True,
) -> None:
    """Index the dataset into a temporary collection, then print nDCG@10,
    Recall@100, MRR@10 and query latency per search mode; writes a JSON
    report and a PNG chart."""
    from ingest.pipeline import chunk_sizes, embedding_text
    from retrieval.evaluation import MEASURES, evaluate, load_beir, write_chart
    from retrieval.qdrant_store import QdrantStore
    from retrieval.store import SEARCH_MODES

    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in SEARCH_MODES]
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown mode(s) {unknown}; valid: {', '.join(SEARCH_MODES)}")
    settings = get_settings()
    data = load_beir(dataset, split)
    chunk, embed, embedder = product_pipeline(settings)
    size, overlap = chunk_sizes(settings, embedder)

    out.mkdir(parents=True, exist_ok=True)
    backend = getattr(settings.embedding, "backend", "torch")
    with tempfile.TemporaryDirectory(prefix="sirocco-eval-") as tmp:
        if settings.qdrant.url:  # a throw-away collection on the server
            q = settings.qdrant.model_copy(update={"collection": f"eval_{uuid.uuid4().hex[:8]}"})
        else:
            q = settings.qdrant.model_copy(update={"path": Path(tmp) / "qdrant"})
        store = QdrantStore(settings.model_copy(update={"qdrant": q}))
        try:
            with store.hold():
                report = evaluate(
                    data, store, name=dataset.name, split=split, chunk=chunk, embed=embed,
                    embed_query=embedder.embed_query, modes=chosen,  # type: ignore[arg-type]
                    cache=out / f"vectors-{dataset.name}-{backend}.npz" if cache else None,
                    embedded_text=embedding_text, model_tag=embedder_tag(embedder),
                    settings={"embedding_model": embedder.model_id, "backend": backend,
                              "chunk_tokens": size, "overlap_tokens": overlap,
                              "prefetch_limit": settings.retrieval.prefetch_limit,
                              "bm25_avg_len": settings.retrieval.bm25_avg_len})
        finally:
            if settings.qdrant.url:
                from qdrant_client import QdrantClient

                from retrieval.collections import drop

                client = QdrantClient(url=settings.qdrant.url, api_key=settings.qdrant.api_key)
                drop(client, q.collection)
            store.close()
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2))
    write_chart(report, out / "report.png")
    table = Table(title=f"{dataset.name} / {split}: {report.queries} queries, "
                        f"{report.documents} documents, {report.chunks} chunks")
    table.add_column("mode")
    for m in MEASURES:
        table.add_column(m, justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p95 ms", justify="right")
    for mode, r in report.modes.items():
        table.add_row(mode, *(f"{r.metrics[m]:.4f}" for m in MEASURES),
                      f"{r.latency_ms_p50:.1f}", f"{r.latency_ms_p95:.1f}")
    console.print(table)
    console.print(f"report: {out / 'report.json'}, chart: {out / 'report.png'}")
