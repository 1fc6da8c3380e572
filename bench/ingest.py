"""Ingestion throughput on SciFact: Sirocco's pipeline vs the LangChain pipeline
a user would write instead, and vs raw ``encode`` on the same chunks (the limit).

    .venv/bin/python bench/ingest.py                 # the whole corpus (5,183 docs)
    .venv/bin/python bench/ingest.py --limit 500     # a quick look

Sirocco: each document is a Markdown file (``# title`` + abstract); the run
registers the folder, then executes the two pipeline stages exactly as the
Celery tasks do (``ingest.pipeline.parse_document`` per document, then
``embed_staged`` batches across documents) in this process, on SQLite and
Qdrant local mode under a temporary folder. Timed from registration until the
last document is stored; writing the files is set-up, not timed.

Peer: ``RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)`` +
``HuggingFaceEmbeddings`` (same model folder, normalised) +
``QdrantVectorStore.from_documents`` in local mode: the LangChain way, from
the same ``title + abstract`` texts. ``--peer tokens`` (or ``both``) runs the
same peer with the splitter LangChain offers for token budgets,
``RecursiveCharacterTextSplitter.from_huggingface_tokenizer``, given the
embedding model's tokenizer and Sirocco's chunk size and overlap in tokens: the
same chunking budget on both sides, so chunks/s compares like with like.

Limits: raw ``SentenceTransformer.encode`` (torch fp32) on Sirocco's chunk
texts, and the configured backend's own ``embed_documents`` on them. Chunk
sizes differ between the two pipelines, so docs/s (the same corpus) and tokens/s
(what the model read, counted with its tokenizer) are printed beside chunks/s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"
#: --quick: the 10-document BEIR fixture the tests ship (same code paths, seconds).
QUICK_DATA = REPO / "tests" / "data" / "beir-mini"


def load_corpus(data: Path, limit: int | None) -> list[dict[str, str]]:
    docs = []
    with (data / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            docs.append({"id": row["_id"], "title": row["title"].strip(),
                         "text": row["text"].strip()})
            if limit and len(docs) >= limit:
                break
    return docs


def run_sirocco(docs: list[dict[str, str]], work: Path, threads: int | None,
                wrap=None) -> dict:
    """The pipeline in this process; ``wrap(store)`` may wrap the store (a recorder)."""
    from sqlalchemy import select

    from ingest.embed_stage import embed_staged
    from ingest.embedding.base import create_embedder
    from ingest.embedding.onnx_export import prepare_embedding_model
    from ingest.models import Document
    from ingest.pipeline import embedding_text, parse_document
    from ingest.service import register_files
    from retrieval.factory import create_store
    from sirocco.db import make_engine, make_session_factory, session_scope, upgrade_database
    from sirocco.settings import Settings

    folder = work / "scifact-md"
    folder.mkdir()
    for d in docs:
        (folder / f"{d['id']}.md").write_text(f"# {d['title']}\n\n{d['text']}\n", "utf-8")
    overrides = {"threads": threads} if threads else {}
    # The models folder `make models` prepared, as the served product uses: the
    # same ONNX export and the same per-machine backend choice (embedding: auto).
    settings = Settings(env="test", data_dir=work / "var", models_dir=REPO / "var" / "models",
                        embedding=overrides)
    prepare_embedding_model(settings)
    upgrade_database(settings)
    factory = make_session_factory(make_engine(settings))
    embedder = create_embedder(settings)  # loaded before the clock starts, as in a worker
    store = create_store(settings)
    if wrap is not None:
        store = wrap(store)

    started = time.perf_counter()
    with session_scope(factory) as s:
        ids = [d.id for d in register_files([folder], session=s)]
    for doc_id in ids:
        parse_document(doc_id, session_factory=factory, tokenizer=embedder, settings=settings)
    parsed_at = time.perf_counter()
    while True:
        with factory() as s:
            nxt = s.scalar(select(Document.id).where(Document.status == "parsed").limit(1))
        if nxt is None:
            break
        embed_staged(nxt, session_factory=factory, embedder=embedder, store=store,
                     settings=settings)
    elapsed = time.perf_counter() - started

    with factory() as s:
        rows = s.execute(select(Document.status, Document.chunk_count)).all()
    chunks = sum(n for _, n in rows)
    assert {st for st, _ in rows} == {"done"}, {st for st, _ in rows}
    assert store.count() == chunks
    # The texts the embedder read, for the raw-encode limits.
    texts = _chunk_texts(factory, ids, settings, embedder, embedding_text)
    return {"elapsed": elapsed, "parse_s": parsed_at - started, "chunks": chunks,
            "texts": texts, "embedder": embedder, "settings": settings}


def _chunk_texts(factory, ids, settings, embedder, embedding_text) -> list[str]:
    """Re-chunk (cheap) to get exactly the embedded texts."""
    from ingest.chunker import chunk_document
    from ingest.models import Document
    from ingest.parsers import parse_file
    from ingest.pipeline import chunk_sizes

    size, overlap = chunk_sizes(settings, embedder)
    out: list[str] = []
    with factory() as s:
        for doc_id in ids:
            doc = s.get(Document, doc_id)
            parsed = parse_file(Path(doc.source_path))
            out += [embedding_text(c) for c in chunk_document(
                parsed, doc_id=doc_id, source=doc.source_path, tokenizer=embedder.tokenizer,
                chunk_tokens=size, overlap_tokens=overlap)]
    return out


def run_langchain(docs: list[dict[str, str]], work: Path, model_dir: str,
                  tokens: tuple[int, int] | None = None) -> dict:
    """The LangChain pipeline; ``tokens=(size, overlap)`` splits by the
    embedding model's tokenizer instead of 1000/200 characters."""
    from langchain_core.documents import Document as LCDocument
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_qdrant import QdrantVectorStore
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    embeddings = HuggingFaceEmbeddings(model_name=model_dir, model_kwargs={"device": "cpu"},
                                       encode_kwargs={"normalize_embeddings": True})
    started = time.perf_counter()
    if tokens is None:
        splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    else:
        from transformers import AutoTokenizer

        splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            AutoTokenizer.from_pretrained(model_dir), chunk_size=tokens[0],
            chunk_overlap=tokens[1])
    chunks = splitter.split_documents(
        [LCDocument(page_content=f"{d['title']}\n\n{d['text']}", metadata={"id": d["id"]})
         for d in docs])
    folder = work / ("lc-qdrant" if tokens is None else "lc-qdrant-tokens")
    store = QdrantVectorStore.from_documents(chunks, embeddings, path=str(folder),
                                             collection_name="scifact")
    elapsed = time.perf_counter() - started
    store.client.close()
    return {"elapsed": elapsed, "chunks": len(chunks),
            "texts": [c.page_content for c in chunks]}


def embedded_tokens(texts: list[str], embedder) -> int:
    """Tokens the model reads for ``texts``: special tokens in, cut at its limit."""
    ids = embedder.tokenizer(texts, truncation=True, max_length=embedder.max_seq_length)
    return sum(len(row) for row in ids["input_ids"])


def raw_encode(texts: list[str], model_dir: str, batch_size: int) -> float:
    """Seconds for ``SentenceTransformer.encode`` (torch fp32) over ``texts``."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu", local_files_only=True)
    model.max_seq_length = 256
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                 show_progress_bar=False)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--quick", action="store_true",
                    help="the 10-document fixture in tests/data: a smoke check")
    ap.add_argument("--limit", type=int, default=None, help="only the first N documents")
    ap.add_argument("--threads", type=int, default=None, help="embedding threads")
    ap.add_argument("--skip-peer", action="store_true", help="no LangChain run")
    ap.add_argument("--peer", choices=("chars", "tokens", "both"), default="chars",
                    help="LangChain splitter: 1000/200 characters (default), Sirocco's "
                         "token budget via from_huggingface_tokenizer, or both")
    ap.add_argument("--skip-raw", action="store_true", help="no raw-encode runs")
    args = ap.parse_args()
    if args.quick:
        args.data = QUICK_DATA
        print(f"--quick: {QUICK_DATA.relative_to(REPO)} (10 documents): a smoke check, "
              "not a benchmark figure")
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not (args.data / "corpus.jsonl").is_file():
        sys.exit(f"{args.data}/corpus.jsonl not found (see ../shared/data/README.md)")
    from ingest.embedding.base import batch_size
    from ingest.embedding.model import embedding_model_dir

    docs = load_corpus(args.data, args.limit)
    work = Path(tempfile.mkdtemp(prefix="sirocco-bench-"))
    try:
        ours = run_sirocco(docs, work, args.threads)
        settings = ours["settings"]
        model_dir = str(embedding_model_dir(settings))
        n = len(docs)
        from ingest.embedding.choice import resolve_backend

        print(f"documents: {n}  cores: {os.cpu_count()}  backend: "
              f"{resolve_backend(settings)} (embedding.backend {settings.embedding.backend})")
        tokens = embedded_tokens(ours["texts"], ours["embedder"])
        rows = [("sirocco pipeline", ours["elapsed"], ours["chunks"], tokens)]
        print(f"  (sirocco: parse+chunk+stage {ours['parse_s']:.1f} s of {ours['elapsed']:.1f} s)")
        if not args.skip_raw:
            t0 = time.perf_counter()
            ours["embedder"].embed_documents(ours["texts"])
            rows.append(("raw embed_documents, sirocco backend, same chunks",
                         time.perf_counter() - t0, len(ours["texts"]), tokens))
            rows.append(("raw SentenceTransformer.encode fp32, same chunks",
                         raw_encode(ours["texts"], model_dir, batch_size(settings, "torch")),
                         len(ours["texts"]), tokens))
        if not args.skip_peer:
            from ingest.pipeline import chunk_sizes

            budget = chunk_sizes(settings, ours["embedder"])
            peers = {"chars": [None], "tokens": [budget], "both": [None, budget]}[args.peer]
            for tokens in peers:
                lc = run_langchain(docs, work, model_dir, tokens)
                label = ("langchain pipeline (1000-char chunks)" if tokens is None else
                         f"langchain pipeline ({tokens[0]}/{tokens[1]}-token chunks)")
                rows.append((label, lc["elapsed"], lc["chunks"],
                             embedded_tokens(lc["texts"], ours["embedder"])))
        # Chunk sizes differ between the pipelines: docs/s (the same corpus) and
        # tokens/s (the model's work, its own tokenizer) sit beside chunks/s.
        print(f"{'pipeline':52} {'seconds':>8} {'chunks':>7} {'tokens':>8} {'chunks/s':>9} "
              f"{'tokens/s':>9} {'docs/s':>7}")
        for name, secs, chunks, toks in rows:
            print(f"{name:52} {secs:8.1f} {chunks:7d} {toks:8d} {chunks / secs:9.1f} "
                  f"{toks / secs:9.0f} {n / secs:7.1f}")
        _, our_secs, our_chunks, our_tokens = rows[0]
        for name, secs, chunks, toks in rows[1:]:
            print(f"sirocco / {name}: chunks/s x{our_chunks / our_secs / (chunks / secs):.2f}, "
                  f"tokens/s x{our_tokens / our_secs / (toks / secs):.2f}, "
                  f"docs/s x{secs / our_secs:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
