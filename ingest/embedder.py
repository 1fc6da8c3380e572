"""The embedder port and its factory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sirocco.errors import ConfigError
from sirocco.settings import Settings


class Embedder(Protocol):
    #: Vector size.
    dim: int
    #: Identifies the model (stored with the collection).
    model_id: str

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        ...

    def embed_query(self, text: str) -> list[float]:
        """A unit-length vector for a search query."""
        ...


def create_embedder(settings: Settings) -> Embedder:
    """Build the embedder chosen by ``settings.embedding.provider``."""
    match settings.embedding.provider:
        case "sentence-transformers":
            from ingest.st_embedder import SentenceTransformerEmbedder

            return SentenceTransformerEmbedder(settings)
        case other:
            raise ConfigError(
                f"unknown embedding provider {other!r}; valid: 'sentence-transformers'"
            )
