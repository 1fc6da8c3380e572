"""The cross-encoder reranker on a real model folder. No reranker ships here,
so the test builds one from the bundled MiniLM encoder with a fresh scoring
head: its scores are arbitrary but real, which is what the plumbing needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.rerank import CrossEncoderReranker, create_reranker
from sirocco.errors import ConfigError
from sirocco.settings import Settings
from sirocco.types import SearchHit

pytestmark = pytest.mark.integration


def _hit(i: int, text: str) -> SearchHit:
    return SearchHit(chunk_id=f"c{i}", doc_id=f"d{i}", chunk_index=0, text=text, title="",
                     source="", score=0.0)


def test_cross_encoder_orders_hits_by_its_own_scores(tmp_path: Path):
    from sentence_transformers import CrossEncoder

    from ingest.embedding.model import embedding_model_dir

    folder = tmp_path / "reranker"
    CrossEncoder(str(embedding_model_dir(Settings())), num_labels=1).save(str(folder))
    reranker = create_reranker(Settings(retrieval={"rerank_model": str(folder)}))
    assert isinstance(reranker, CrossEncoderReranker)
    hits = [_hit(i, t) for i, t in enumerate(
        ["The bora is a cold wind.", "Turbines need oil.", "Salary bands", "The harbour"])]
    top = reranker.rerank("cold Adriatic wind", hits, top_k=3)
    assert len(top) == 3 and [h.score for h in top] == sorted((h.score for h in top),
                                                              reverse=True)
    expected = reranker._model.predict([("cold Adriatic wind", h.text) for h in hits])
    assert top[0].doc_id == f"d{int(expected.argmax())}"
    assert create_reranker(Settings()) is None  # off by default
    with pytest.raises(ConfigError, match="does not exist"):
        CrossEncoderReranker(tmp_path / "nowhere")
