"""An optional second stage: a cross-encoder re-scores the retrieved chunks.

Off by default (no reranker model ships with Sirocco); set
``SIROCCO_RETRIEVAL__RERANK_MODEL`` to a local sentence-transformers
cross-encoder folder (e.g. ``cross-encoder/ms-marco-MiniLM-L-6-v2``). The
search then fetches ``rerank_candidates`` chunks and keeps the best ``top_k``
by the cross-encoder's score.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from sirocco.errors import ConfigError
from sirocco.settings import Settings
from sirocco.types import SearchHit

logger = logging.getLogger(__name__)


class Reranker(Protocol):
    def rerank(self, query: str, hits: Sequence[SearchHit], top_k: int) -> list[SearchHit]:
        """The ``top_k`` best of ``hits`` for ``query``, best first, rescored."""
        ...


class CrossEncoderReranker:
    """``Reranker`` on a sentence-transformers ``CrossEncoder`` from a local folder."""

    def __init__(self, model_dir: str | Path, *, batch_size: int = 32,
                 device: str = "cpu") -> None:
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise ConfigError(f"reranker model folder {path} does not exist "
                              "(SIROCCO_RETRIEVAL__RERANK_MODEL must be a local folder)")
        try:
            from sentence_transformers import CrossEncoder
        except ImportError:
            raise ConfigError("sentence-transformers is not installed: "
                              "`pip install sentence-transformers`") from None
        self._model = CrossEncoder(str(path), device=device, local_files_only=True)
        self._batch_size = batch_size
        logger.info("reranker loaded", extra={"model": str(path)})

    def rerank(self, query: str, hits: Sequence[SearchHit], top_k: int) -> list[SearchHit]:
        if not hits:
            return []
        scores = self._model.predict([(query, h.text) for h in hits],
                                     batch_size=self._batch_size, show_progress_bar=False)
        ranked = sorted(zip(hits, scores, strict=True), key=lambda p: -float(p[1]))
        return [replace(h, score=float(s)) for h, s in ranked[:top_k]]


def create_reranker(settings: Settings) -> Reranker | None:
    """The configured reranker, or None when reranking is off."""
    model = settings.retrieval.rerank_model
    return CrossEncoderReranker(model, device=settings.embedding.device) if model else None
