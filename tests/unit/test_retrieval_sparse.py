"""BM25 sparse vectors: analysis, weights, stable term ids."""

from __future__ import annotations

import zlib

import pytest

from retrieval.sparse import SparseEncoder, term_id
from sirocco.errors import ConfigError


def test_terms_are_lowercased_stemmed_and_stop_words_dropped():
    enc = SparseEncoder()
    assert enc.terms("The Proteins are studied in running cells; ZX-4471.") == [
        "protein", "studi", "run", "cell", "zx", "4471"]


def test_document_weights_follow_bm25_term_frequency_saturation():
    enc = SparseEncoder(avg_len=4)
    ids, values = enc.encode_document("cell cell cell protein")
    w = dict(zip(ids, values, strict=True))
    # length 4 == avg_len: norm = k1; tf-part = tf * (k1 + 1) / (tf + k1)
    assert w[term_id("cell")] == pytest.approx(3 * 2.2 / (3 + 1.2))
    assert w[term_id("protein")] == pytest.approx(2.2 / 2.2)
    # A longer chunk weighs the same term frequency less.
    long_ids, long_values = enc.encode_document("protein " + "filler " * 12)
    assert dict(zip(long_ids, long_values, strict=True))[term_id("protein")] < 1.0
    assert enc.encode_document("the of and") == ([], [])


def test_query_vector_has_one_per_distinct_term_and_ids_are_stable():
    enc = SparseEncoder()
    ids, values = enc.encode_query("cells cell CELL proteins")
    assert sorted(ids) == sorted({term_id("cell"), term_id("protein")}) and values == [1.0, 1.0]
    # The same in every process (no per-process hash seed): CRC-32 of the stem.
    assert term_id("cell") == zlib.crc32(b"cell") and 0 <= term_id("cell") < 2**32


def test_unknown_language_is_a_config_error():
    with pytest.raises(ConfigError, match="no stemmer for 'klingon'"):
        SparseEncoder("klingon")
