"""The embedder port and its factory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sirocco.errors import ConfigError
from sirocco.settings import Settings

VALID_BACKENDS = "'auto', 'torch', 'torch-bf16', 'onnx', 'onnx-int8'"


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
    """Build the embedder chosen by ``settings.embedding.provider`` and ``.backend``.

    The onnx backends export the model on first use unless ``sirocco models
    prepare`` did it already; a missing onnxruntime is a ConfigError with a hint.
    """
    match settings.embedding.provider:
        case "sentence-transformers":
            pass
        case provider:
            raise ConfigError(
                f"unknown embedding provider {provider!r}; valid: 'sentence-transformers'"
            )
    from ingest.embedding.choice import resolve_backend

    match resolve_backend(settings):
        case "torch" | "torch-bf16" as backend:
            from ingest.embedding.st import SentenceTransformerEmbedder

            return SentenceTransformerEmbedder(settings, bf16=backend == "torch-bf16")
        case "onnx" | "onnx-int8" as backend:
            from ingest.embedding.onnx import OnnxEmbedder

            return OnnxEmbedder(settings, quantized=backend == "onnx-int8")
        case other:
            raise ConfigError(f"unknown embedding backend {other!r}; valid: {VALID_BACKENDS}")
