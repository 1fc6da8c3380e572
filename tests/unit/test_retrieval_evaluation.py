"""retrieval.evaluation: BEIR loading, document runs from chunk hits, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.evaluation import documents_by_best_chunk, index_corpus, load_beir, score
from sirocco.errors import InvalidInputError
from sirocco.types import Chunk, SearchHit

MINI = Path(__file__).resolve().parents[1] / "data" / "beir-mini"


def test_load_beir_reads_text_only_and_keeps_judged_queries():
    data = load_beir(MINI)
    assert len(data.corpus) == 10 and data.corpus["d5"][0] == "Turbine maintenance"
    assert set(data.queries) == {"q1", "q2", "q3", "q4", "q5"}
    assert data.queries["q3"] == "How often do turbine gearboxes need oil?"
    assert data.qrels["q2"] == {"d2": 1, "d6": 1}


def test_load_beir_names_what_is_missing(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "a", "title": "", "text": "x"}))
    with pytest.raises(InvalidInputError, match=r"missing .*queries.jsonl, .*qrels/test.tsv"):
        load_beir(tmp_path)


def _hit(doc: str, chunk: int) -> SearchHit:
    return SearchHit(chunk_id=f"{doc}-{chunk}", doc_id=doc, chunk_index=chunk, text="",
                     title="", source="", score=0.0)


def test_a_document_ranks_by_its_best_chunk():
    run = documents_by_best_chunk([_hit("a", 1), _hit("b", 0), _hit("a", 0), _hit("c", 2)])
    assert sorted(run, key=run.get, reverse=True) == ["a", "b", "c"]


def test_metrics_come_from_ir_measures():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": {"a": 2.0, "x": 1.0}, "q2": {"x": 2.0, "b": 1.0}}
    got = score(qrels, run)
    assert got["RR@10"] == pytest.approx(0.75)  # 1 and 1/2
    assert got["R@100"] == 1.0
    assert got["nDCG@10"] == pytest.approx((1 + 1 / 1.5849625) / 2, abs=1e-4)


def test_cached_vectors_are_reused_only_for_the_same_model_and_embedded_text(tmp_path):
    data = load_beir(MINI)
    upserted: list[int] = []

    class Store:  # a double: index_corpus only upserts
        def upsert(self, chunks, vectors):
            upserted.append(len(chunks))

    def chunk(doc_id, title, text):
        return [Chunk(doc_id=doc_id, chunk_index=0, text=text, title=title, source=doc_id,
                      start_char=0, end_char=len(text))]

    embedded: list[int] = []

    def embed(chunks):
        embedded.append(len(chunks))
        return [[float(len(c.text)), 1.0] for c in chunks]

    cache = tmp_path / "vectors.npz"

    def index(**key):
        embedded.clear()
        assert index_corpus(data, Store(), chunk=chunk, embed=embed, cache=cache, **key) == 10
        return bool(embedded)

    assert index(model_tag="m1") is True  # first run: computed and saved
    assert index(model_tag="m1") is False  # same key: reused
    assert index(model_tag="m2") is True  # another model or export
    assert index(model_tag="m2", embedded_text=lambda c: f"{c.title}\n\n{c.text}") is True
    assert index(model_tag="m2", embedded_text=lambda c: f"{c.title}\n\n{c.text}") is False
    assert sum(upserted) == 50
