"""BM25 as Qdrant sparse vectors.

A chunk's sparse vector holds, for each distinct term, BM25's term-frequency
part ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))``; the query
vector holds 1.0 per distinct query term; the collection's sparse vector uses
Qdrant's ``Modifier.IDF``, so Qdrant multiplies each matching term by its
inverse document frequency over the live collection. The dot product is then
the BM25 score, with IDF always current as documents come and go.

Analysis follows Elasticsearch's ``english`` analyzer (the BM25 of the BEIR
baselines): Unicode word tokens, lower-cased, Lucene's English stop words,
Snowball stemming. A term's index is a stable 32-bit hash of its stem, so no
vocabulary is stored and every process agrees.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter
from functools import lru_cache
from typing import Any

#: Lucene's ``EnglishAnalyzer.ENGLISH_STOP_WORDS_SET``.
ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)
K1 = 1.2
B = 0.75
_TOKEN = re.compile(r"\w+", re.UNICODE)


class SparseEncoder:
    """Text -> (indices, values) for Qdrant sparse vectors, BM25-weighted.

    ``avg_len`` is the typical chunk length in terms (after stop words) that
    length normalisation is relative to; chunks are sized in tokens, so a
    constant serves (fastembed's BM25 does the same).
    """

    def __init__(self, language: str = "english", *, avg_len: float = 100.0,
                 k1: float = K1, b: float = B) -> None:
        self.language = language
        self.avg_len = avg_len
        self.k1, self.b = k1, b
        self._stem = _stemmer(language)
        self._stop = ENGLISH_STOP_WORDS if language == "english" else frozenset()

    def terms(self, text: str) -> list[str]:
        """The analysed terms of ``text``, in order (stop words dropped, stemmed)."""
        words = [w for w in _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())
                 if w not in self._stop]
        return self._stem(words)

    def encode_document(self, text: str) -> tuple[list[int], list[float]]:
        """BM25 term-frequency weights of a chunk's terms."""
        # Counted by index: two stems that hash alike (rare) are one term,
        # in documents and queries alike.
        counts = Counter(term_id(t) for t in self.terms(text))
        if not counts:
            return [], []
        length = sum(counts.values())
        norm = self.k1 * (1 - self.b + self.b * length / self.avg_len)
        ids = sorted(counts)
        return ids, [counts[i] * (self.k1 + 1) / (counts[i] + norm) for i in ids]

    def encode_query(self, text: str) -> tuple[list[int], list[float]]:
        """One per distinct query term (Qdrant applies the IDF)."""
        ids = sorted({term_id(t) for t in self.terms(text)})
        return ids, [1.0] * len(ids)


def term_id(term: str) -> int:
    """A stable unsigned 32-bit index for a term."""
    return zlib.crc32(term.encode("utf-8"))


@lru_cache(maxsize=8)
def _stemmer(language: str) -> Any:
    try:
        import Stemmer
    except ImportError:
        from sirocco.errors import ConfigError

        raise ConfigError("PyStemmer is not installed: `pip install pystemmer`") from None
    if language not in Stemmer.algorithms():
        from sirocco.errors import ConfigError

        raise ConfigError(f"no stemmer for {language!r}; valid: {sorted(Stemmer.algorithms())}")
    return Stemmer.Stemmer(language).stemWords
