"""``sirocco eval answers``: a QA set asked through the assistant (the path of
``/api/chat``), graded by ``assistant.evaluation``, against the live index or
a temporary one built from files (``--docs``); ``--baseline`` asks the same
questions the way answers were made before issue 20 (``assistant.settings
baseline``), in the same run, and reports the change per measure."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from cli._utils import console, err_console
from sirocco.principal import Principal
from sirocco.settings import Settings

if TYPE_CHECKING:
    from assistant.evaluation import QAItem, RunReport
    from retrieval.store import Store

#: The documents of a ``--docs`` index are visible to this tenant (to everyone in it).
EVAL_TENANT = "default"


@dataclass(frozen=True, slots=True)
class AnswerEvalJob:
    """What one ``sirocco eval answers`` run does."""

    qa: Path
    docs: tuple[Path, ...]
    out: Path
    baseline: bool
    principal: Principal
    split: str | None = None


def run_answer_eval(settings: Settings, job: AnswerEvalJob) -> list[RunReport]:
    """Ask the QA set (and, with ``job.baseline``, again the old way); write
    ``report.json`` and ``report.png`` under ``job.out``; the runs, candidate first."""
    from assistant.evaluation import load_qa, write_chart

    items = [i for i in load_qa(job.qa) if job.split is None or i.split == job.split]
    if not items:
        from sirocco.errors import InvalidInputError

        raise InvalidInputError(f"{job.qa}: no questions of split {job.split!r}")
    job.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sirocco-eval-answers-") as tmp:
        runs = asyncio.run(_run(settings, job, items, Path(tmp)))
    report: dict[str, Any] = {"qa": str(job.qa), "split": job.split,
                              "docs": [str(d) for d in job.docs] or None,
                              "questions": len(items), "runs": [r.to_json() for r in runs]}
    if len(runs) > 1:
        from assistant.evaluation import deltas

        report["change_vs_baseline"] = deltas(runs[0], runs[1])
    (job.out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    write_chart(runs, job.out / "report.png")
    return runs


async def _run(settings: Settings, job: AnswerEvalJob, items: list[QAItem], tmp: Path
               ) -> list[RunReport]:
    from assistant.evaluation import ask_all, report_of
    from assistant.service import Assistant
    from ingest.embedding.base import create_embedder
    from llm.engine import create_llm_engine
    from retrieval.factory import create_store
    from sirocco.db import make_engine, make_session_factory, upgrade_database
    from traces.recorder import TraceRecorder

    # The evaluation's traces are not the product's: a throw-away database.
    settings = settings.model_copy(update={
        "db": settings.db.model_copy(update={"url": f"sqlite:///{tmp / 'eval.db'}"})})
    if job.docs:
        settings = settings.model_copy(update={
            "qdrant": settings.qdrant.model_copy(update={"url": None, "path": tmp / "qdrant"})})
    async with AsyncExitStack() as stack:
        db = make_engine(settings)
        stack.callback(db.dispose)
        await asyncio.to_thread(upgrade_database, settings, engine=db)
        recorder = TraceRecorder(make_session_factory(db))
        stack.callback(recorder.close)
        embedder = await asyncio.to_thread(create_embedder, settings)
        store = create_store(settings)
        stack.callback(store.close)
        if job.docs:
            indexed = await asyncio.to_thread(index_files, settings, store, embedder, job.docs)
            err_console.print(f"indexed {indexed} chunks from {len(job.docs)} path(s)")
        calibration = await asyncio.to_thread(_calibration, store, embedder, items,
                                              job.principal)
        engine = create_llm_engine(settings)
        stack.push_async_callback(engine.close)
        configs = [("candidate", settings)]
        if job.baseline:
            from assistant.evaluation import baseline_settings

            configs.append(("baseline", baseline_settings(settings)))
        runs = []
        for name, config in configs:
            assistant = Assistant(engine, store, embedder, recorder, config)
            outcomes = []
            for n, item in enumerate(items, start=1):
                [outcome] = await ask_all(assistant, [item], job.principal)
                outcomes.append(outcome)
                err_console.print(f"{name} {n}/{len(items)} {item.id}: "
                                  f"{outcome.latency_ms:.0f} ms", highlight=False)
            runs.append(report_of(name, items, outcomes, settings=_described(config)))
        runs[0].settings["calibration"] = calibration
        return runs


def _calibration(store: Store, embedder: Any, items: Sequence[QAItem],
                 principal: Principal) -> dict[str, Any]:
    """Each question's closest-chunk dense similarity (what
    ``assistant.refusal_min_score`` compares), and the threshold the dev
    split suggests, scored on the test split (``assistant.evaluation.calibrate``)."""
    from assistant.evaluation import calibrate
    from retrieval.store import SearchFilter

    flt = SearchFilter(caller=principal)
    relevance = []
    for item in items:
        best = store.search(embedder.embed_query(item.question), top_k=1, mode="dense",
                            filter=flt)
        relevance.append(round(float(best[0].score), 4) if best else -1.0)
    return {**calibrate(items, relevance),
            "relevance": {i.id: r for i, r in zip(items, relevance, strict=True)}}


def _described(settings: Settings) -> dict[str, Any]:
    """The settings of a run that change answers, for the report."""
    llm = settings.llm
    return {"model": llm.model or f"bundled:{llm.bundled}", "max_tokens": llm.max_tokens,
            "temperature": llm.temperature, "top_k": settings.retrieval.top_k,
            "mode": settings.retrieval.mode,
            **{k: getattr(llm, k) for k in ("answer_format", "repetition_penalty")
               if hasattr(llm, k)},
            **{k: getattr(settings.assistant, k) for k in ("refusal_min_score",)
               if hasattr(settings.assistant, k)}}


def index_files(settings: Settings, store: Store, embedder: Any, paths: Sequence[Path]) -> int:
    """Parse, chunk, embed and store every file under ``paths`` (files or
    folders; hidden files skipped), visible to everyone in ``EVAL_TENANT``;
    the display path is the file's path under the folder given (or its name).
    Files that cannot be parsed are reported and skipped. Returns the chunk count."""
    from ingest.chunker import chunk_document
    from ingest.formats.base import Limits
    from ingest.parsers import parse_bytes, read_file
    from ingest.pipeline import chunk_sizes, embedding_text
    from sirocco.errors import SiroccoError

    size, overlap = chunk_sizes(settings, embedder)
    limits = Limits.from_settings(settings.ingest)
    store.ensure_collection(embedder.dim)
    total = 0
    for root, path in _files(paths):
        shown = str(path.relative_to(root)) if root != path else path.name
        try:
            parsed = parse_bytes(read_file(path, limits), name=str(path), limits=limits)
            chunks = chunk_document(parsed, doc_id=_doc_id(shown), source=shown,
                                    tenant=EVAL_TENANT,
                                    tokenizer=getattr(embedder, "tokenizer", None),
                                    chunk_tokens=size, overlap_tokens=overlap)
        except SiroccoError as exc:
            err_console.print(f"skipped {shown}: {exc.message}")
            continue
        if chunks:
            store.upsert(chunks, embedder.embed_documents([embedding_text(c) for c in chunks]))
            total += len(chunks)
    return total


def _files(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(the folder given, a file under it) for every visible file, sorted."""
    out: list[tuple[Path, Path]] = []
    for p in paths:
        if p.is_dir():
            out += [(p, f) for f in sorted(p.rglob("*"))
                    if f.is_file() and not any(part.startswith(".")
                                               for part in f.relative_to(p).parts)]
        elif p.is_file():
            out.append((p, p))
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return out


def _doc_id(shown: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sirocco-eval:{shown}"))


def print_runs(runs: Sequence[RunReport]) -> None:
    """The overall measures of each run (a column each; with a baseline, the
    change against it)."""
    from assistant.evaluation import MEASURES, deltas

    table = Table(title=f"answers: {int(runs[0].metrics['questions'] or 0)} questions")
    table.add_column("measure")
    for run in runs:
        table.add_column(run.name, justify="right")
    change = deltas(runs[0], runs[1]) if len(runs) > 1 else None
    if change is not None:
        table.add_column("change", justify="right")
    for m in MEASURES:
        table.add_row(m, *(_cell(r.metrics.get(m)) for r in runs),
                      *([_cell(change[m], signed=True)] if change is not None else []))
    for label, key in (("latency p50 ms", "latency_ms_p50"), ("latency p95 ms",
                                                              "latency_ms_p95")):
        table.add_row(label, *(f"{getattr(r, key):.0f}" for r in runs),
                      *([""] if change is not None else []))
    console.print(table)


def _cell(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"
