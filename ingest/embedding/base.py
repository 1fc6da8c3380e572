"""The embedder port and its factory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sirocco.errors import ConfigError
from sirocco.settings import Settings

VALID_BACKENDS = "'auto', 'torch', 'torch-bf16', 'onnx', 'onnx-int8'"

#: Texts per forward pass when ``embedding.batch_size`` is unset, per backend
#: family: on 2-core Intel (AMX) machines 64 was the slowest size measured for
#: both, and these the fastest (docs/benchmarks.md, "Batch size").
DEFAULT_BATCH_SIZE = {"onnx": 8, "torch": 32}


def batch_size(settings: Settings, backend: str) -> int:
    """``embedding.batch_size``, or ``backend``'s own default when unset."""
    configured = settings.embedding.batch_size
    return configured or DEFAULT_BATCH_SIZE["onnx" if backend.startswith("onnx") else "torch"]


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


def create_query_embedder(settings: Settings) -> Embedder:
    """The embedder for search queries (``embedding.query_backend``; see
    ``choice.resolve_query_backend``): the API's, which embeds no documents."""
    from ingest.embedding.choice import resolve_query_backend

    backend = resolve_query_backend(settings)
    embedding = settings.embedding.model_copy(update={"backend": backend})
    return create_embedder(settings.model_copy(update={"embedding": embedding}))


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
