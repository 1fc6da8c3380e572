"""The vector store port and its factory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sirocco.errors import ConfigError
from sirocco.settings import Settings
from sirocco.types import Chunk, SearchHit


class Store(Protocol):
    def ensure_collection(self, dim: int) -> None:
        """Create the collection (and payload indexes) if missing; idempotent."""
        ...

    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        """Write chunks with deterministic ids: re-upserting never duplicates."""
        ...

    def delete_document(self, doc_id: str) -> None:
        """Remove every chunk of a document."""
        ...

    def replace_documents(
        self, doc_ids: Sequence[str], chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]
    ) -> None:
        """Remove every chunk of ``doc_ids``, then write ``chunks`` (of those
        documents), as one store operation."""
        ...

    def search(
        self,
        vector: Sequence[float],
        *,
        top_k: int,
        tenant: str | None = None,
        doc_ids: Sequence[str] | None = None,
    ) -> list[SearchHit]:
        """The ``top_k`` nearest chunks, best first, filtered inside Qdrant."""
        ...

    def count(self, *, doc_id: str | None = None) -> int:
        """Number of stored chunks (of one document when ``doc_id`` is given)."""
        ...

    def close(self) -> None:
        ...


def create_store(settings: Settings) -> Store:
    """The Qdrant adapter: server when ``qdrant.url`` is set, else local mode."""
    from retrieval.qdrant_store import QdrantStore

    if settings.qdrant.url is None and settings.qdrant_path is None:
        raise ConfigError("set SIROCCO_QDRANT_URL or a local qdrant path")
    return QdrantStore(settings)
