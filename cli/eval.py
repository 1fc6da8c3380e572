"""``sirocco eval retrieval``: the retrieval evaluation on BEIR-format data,
wired to the product's own chunker and embedder (``retrieval.evaluation``,
``ingest.evaluation``)."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli._utils import console, open_store
from sirocco.settings import Settings, get_settings

if TYPE_CHECKING:
    from retrieval.evaluation import Dataset, Report
    from retrieval.store import SearchMode

eval_app = typer.Typer(help="Evaluation.", no_args_is_help=True)


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
    from retrieval.evaluation import load_beir, write_chart

    chosen = _search_modes(modes)
    settings = get_settings()
    data = load_beir(dataset, split)
    report = _evaluate(settings, data, name=dataset.name, split=split, modes=chosen, out=out,
                       cache=cache)
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2))
    write_chart(report, out / "report.png")
    _print_report(report, name=dataset.name, split=split)
    console.print(f"report: {out / 'report.json'}, chart: {out / 'report.png'}")


def _search_modes(modes: str) -> list[SearchMode]:
    """The comma-separated search modes, in the order given; BadParameter
    when one is unknown or none is given."""
    from retrieval.store import SEARCH_MODES

    known: dict[str, SearchMode] = {m: m for m in SEARCH_MODES}
    names = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise typer.BadParameter(f"unknown mode(s) {unknown}; valid: {', '.join(SEARCH_MODES)}")
    return [known[m] for m in names]


def _evaluate(settings: Settings, data: Dataset, *, name: str, split: str,
              modes: list[SearchMode], out: Path, cache: bool) -> Report:
    """Chunk, embed and index ``data`` into a throw-away collection (on the
    server, or in a temporary local folder) and score each mode."""
    from ingest.evaluation import embedder_tag, product_pipeline
    from ingest.pipeline import chunk_sizes, embedding_text
    from retrieval.evaluation import evaluate

    chunk, embed, embedder = product_pipeline(settings)
    size, overlap = chunk_sizes(settings, embedder)
    out.mkdir(parents=True, exist_ok=True)
    backend = getattr(settings.embedding, "backend", "torch")
    with tempfile.TemporaryDirectory(prefix="sirocco-eval-") as tmp:
        if settings.qdrant.url:  # a throw-away collection on the server
            q = settings.qdrant.model_copy(update={"collection": f"eval_{uuid.uuid4().hex[:8]}"})
        else:
            q = settings.qdrant.model_copy(update={"path": Path(tmp) / "qdrant"})
        store = open_store(settings.model_copy(update={"qdrant": q}))
        try:
            with store.hold():
                return evaluate(
                    data, store, name=name, split=split, chunk=chunk, embed=embed,
                    embed_query=embedder.embed_query, modes=modes,
                    cache=out / f"vectors-{name}-{backend}.npz" if cache else None,
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


def _print_report(report: Report, *, name: str, split: str) -> None:
    """The metrics and latencies per mode, as a table."""
    from retrieval.evaluation import MEASURES

    table = Table(title=f"{name} / {split}: {report.queries} queries, "
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


@eval_app.command("answers")
def eval_answers(
    qa: Annotated[Path, typer.Option(help="QA set (JSONL): question, sources, keywords, "
                                          "reference, or unanswerable: true.")],
    docs: Annotated[list[Path] | None, typer.Option(
        help="Files or folders to index into a temporary index (repeatable); "
             "none: the live index.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.json and report.png.")] = Path(
        "var/eval-answers"),
    baseline: Annotated[bool, typer.Option(help="Also answer the old way (free-form prompt, "
                                                "no refusal threshold, no repetition "
                                                "penalty) and report the change.")] = False,
    split: Annotated[str | None, typer.Option(help="Only the questions of this split.")] = None,
    tenant: Annotated[str, typer.Option(help="Live index: the asking tenant.")] = "default",
    user: Annotated[str | None, typer.Option(help="Live index: the asking user.")] = None,
    group: Annotated[list[str] | None, typer.Option(help="Live index: the user's groups.")
                     ] = None,
    min_hit_k: Annotated[float | None, typer.Option(help="Least share of answerable "
                                                         "questions with an expected "
                                                         "source among the sources.")] = None,
    min_hit_1: Annotated[float | None, typer.Option(help="Least hit@1 (first citation).")
                         ] = None,
    min_cited: Annotated[float | None, typer.Option(help="Least share with a model-written "
                                                         "citation.")] = None,
    min_supported: Annotated[float | None, typer.Option(help="Least share of cited answers "
                                                             "all supported.")] = None,
    min_keywords: Annotated[float | None, typer.Option(help="Least keyword match.")] = None,
    min_refusal: Annotated[float | None, typer.Option(help="Least refusal accuracy on "
                                                           "unanswerable questions.")] = None,
    max_false_refusal: Annotated[float | None, typer.Option(
        help="Most share of answerable questions refused.")] = None,
) -> None:
    """Ask a QA set through the assistant (as /api/chat does) and grade the
    answers: sources, citations, support, keywords, refusals, latency. Writes
    report.json and report.png; exits 1 when a --min-*/--max-* threshold is missed."""
    from assistant.evaluation import check_thresholds
    from cli._utils import fail, quiet_engine_logs
    from cli.eval_answers import AnswerEvalJob, print_runs, run_answer_eval
    from sirocco.principal import Principal

    job = AnswerEvalJob(qa=qa, docs=tuple(docs or ()), out=out, baseline=baseline, split=split,
                        principal=Principal(tenant=tenant, user=user or "sirocco-eval",
                                            groups=tuple(group or ())))
    quiet_engine_logs()
    runs = run_answer_eval(get_settings(), job)
    print_runs(runs)
    console.print(f"report: {out / 'report.json'}, chart: {out / 'report.png'}")
    minimums = {k: v for k, v in {"hit_k": min_hit_k, "hit_1": min_hit_1, "cited": min_cited,
                                  "supported": min_supported, "keywords": min_keywords,
                                  "refusal": min_refusal}.items() if v is not None}
    maximums = {"false_refusal": max_false_refusal} if max_false_refusal is not None else {}
    failed = check_thresholds(runs[0].metrics, minimums, maximums)
    if failed:
        fail("thresholds missed: " + "; ".join(failed))
