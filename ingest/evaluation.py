"""The product's own chunker and embedder as the callables of the retrieval
evaluation (``retrieval.evaluation`` takes them as arguments: retrieval does
not import ingest). Used by ``sirocco eval retrieval`` and ``bench/retrieval.py``."""

from __future__ import annotations

from typing import Any

from ingest.embedding.base import Embedder
from retrieval.evaluation import ChunkFn, EmbedChunks
from sirocco.settings import Settings
from sirocco.types import Chunk


def product_pipeline(settings: Settings) -> tuple[ChunkFn, EmbedChunks, Embedder]:
    """The product's chunker and embedder as the evaluation's callables:
    (chunk(doc_id, title, text), embed(chunks), embedder)."""
    from ingest.chunker import chunk_document
    from ingest.embedding.base import create_embedder
    from ingest.parsers import parse_bytes
    from ingest.pipeline import chunk_sizes, embedding_text

    embedder = create_embedder(settings)
    size, overlap = chunk_sizes(settings, embedder)

    def chunk(doc_id: str, title: str, text: str) -> list[Chunk]:
        parsed = parse_bytes(f"# {title}\n\n{text}\n".encode(), name=f"{doc_id}.md")
        # Both embedders carry the model's tokenizer (not in the port): the
        # chunker counts tokens with it.
        tokenizer = getattr(embedder, "tokenizer", None)
        return chunk_document(parsed, doc_id=doc_id, source=doc_id, tokenizer=tokenizer,
                              chunk_tokens=size, overlap_tokens=overlap)

    def embed(chunks: list[Chunk]) -> list[list[float]]:
        return embedder.embed_documents([embedding_text(c) for c in chunks])

    return chunk, embed, embedder


def embedder_tag(embedder: Any) -> str:
    """Which weights and export produce the vectors (a cache key part): the
    ONNX file (its folder name carries the export's fingerprint) or the model id."""
    return str(getattr(embedder, "model_file", "") or embedder.model_id)
