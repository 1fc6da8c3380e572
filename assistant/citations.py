"""From ``[n]`` markers in an answer to verified citations of the numbered sources.

``resolve_citations`` maps markers to sources; out-of-range markers (chunks
the model never saw) are dropped and reported. Each sentence that carries a
marker is then checked against the cited chunk's full text.

What the check is: *lexical overlap*. The support score is the share of the
sentence's content terms (stop words dropped, stemmed: the BM25 analyzer of
``retrieval.sparse``) found in the chunk. Negation words (``NEGATIONS``, and
``n't``, read as "not") are kept as terms, although the BM25 analyzer drops
"no" and "not" as stop words, and polarity must agree: when the claim is
negated and the chunk sentence that best matches it is not, or the other way
round, the score is 0. A sentence with no content terms (only stop words or
negations: "That is it.", "No.") gets 0: there is nothing the chunk could
back. A claim below ``min_support`` is flagged ``supported=False``; it stays in the
answer (the model said it) but the response and the trace say it is not
backed by its source. The supporting snippet is the chunk sentence that
shares the most terms with the claim, with its document character offsets.

What it is not: entailment. Word order, quantities, conditions, synonyms and
paraphrase are not understood: "economy under six hours" is supported by a
chunk saying "business under six hours, economy above" (same words), and a
faithful paraphrase in other words is flagged. ``supported`` is a cheap
signal that a citation points at the right chunk, not proof the claim holds.

Small models often cite nothing: a non-empty answer is then attributed to the
top source with ``inferred=True`` (nothing checked, ``supported`` None), except
an answer that opens with the not-found sentence (``says_not_found``): it
claims nothing from the sources, so no source is attributed to it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from assistant.prompts import NOT_FOUND_ANSWER
from assistant.schemas import Citation, CitedClaim, Source
from retrieval.sparse import SparseEncoder

# "[1]", "[1, 3]", "[2,4]"; adjacent markers like "[1][2]" match one by one.
_MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
# A sentence ends at . ! ? before a space (so not inside 3.5) or at a line break.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|\n+")
_LEADING_MARKERS = re.compile(r"^\s*(?:\[\d{1,3}(?:\s*,\s*\d{1,3})*\]\s*)+")
_WORD = re.compile(r"\w+", re.UNICODE)
# "isn't" -> "is not"; the irregular ones lose more than "n't".
_IRREGULAR = {"ca": "can", "wo": "will", "sha": "shall"}
_IRREGULAR_NT = re.compile(r"\b(ca|wo|sha)n['\u2019]t\b")
_NT = re.compile(r"\b(\w+)n['\u2019]t\b")
#: Words that turn a statement around; kept as terms by the support check.
NEGATIONS = frozenset(
    "no not never none nor neither nothing nobody nowhere cannot".split())
_NOT_FOUND_WORDS = " ".join(_WORD.findall(NOT_FOUND_ANSWER.lower()))
DEFAULT_MIN_SUPPORT = 0.5
SNIPPET_MAX_CHARS = 300


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence of the answer: its text without markers and the numbers it cites."""

    text: str
    cited: tuple[int, ...]


def cited_numbers(answer: str) -> list[int]:
    """Source numbers in order of first appearance, without repeats."""
    seen: dict[int, None] = {}
    for match in _MARKER.finditer(answer):
        for part in match.group(1).split(","):
            seen.setdefault(int(part), None)
    return list(seen)


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(p) for m in _MARKER.finditer(text) for p in m.group(1).split(","))


def split_sentences(answer: str) -> list[Sentence]:
    """The answer's sentences with the markers each carries. Markers right after
    a sentence's full stop ("... big. [2] Next ...") belong to that sentence."""
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(answer):
        pieces.append(answer[start:match.end()])
        start = match.end()
    pieces.append(answer[start:])
    sentences: list[list[str]] = []
    for piece in pieces:
        lead = _LEADING_MARKERS.match(piece)
        if lead and sentences:
            sentences[-1].append(lead.group(0))
            piece = piece[lead.end():]
        if piece.strip() or (lead and not sentences):
            sentences.append([piece])
    out = []
    for parts in sentences:
        raw = "".join(parts)
        text = " ".join(re.sub(r"\s*" + _MARKER.pattern, " ", raw).split())
        text = re.sub(r" ([.,;:!?])", r"\1", text)
        out.append(Sentence(text=text, cited=_numbers(raw)))
    return [s for s in out if s.text or s.cited]


def strip_markers(answer: str, numbers: Sequence[int]) -> str:
    """``answer`` without the given source numbers in its markers ("[1, 7]" with 7
    dropped becomes "[1]"; "[7]" disappears)."""
    drop = set(numbers)
    if not drop:
        return answer

    def keep(match: re.Match[str]) -> str:
        kept = [p.strip() for p in match.group(1).split(",") if int(p) not in drop]
        return f"[{', '.join(kept)}]" if kept else ""

    return re.sub(r" +([.,;:!?])", r"\1", _MARKER.sub(keep, answer))


class SupportChecker:
    """Lexical support of a claim by a chunk: content-term recall, stemmed,
    negations kept as terms and required to agree (see the module docstring)."""

    def __init__(self, language: str = "english",
                 min_support: float = DEFAULT_MIN_SUPPORT) -> None:
        self._encoder = SparseEncoder(language)
        self.min_support = min_support

    def terms(self, text: str) -> set[str]:
        """Content terms of ``text``: stemmed, stop words out, numbers kept, and
        the negation words it holds (``n't`` as "not")."""
        negations = negation_words(text)
        # The negations are taken out before stemming so that each counts once,
        # under its own spelling (the stemmer would turn "nothing" into "noth").
        words = [w for w in _words(text) if w not in NEGATIONS]
        return set(self._encoder.terms(" ".join(words))) | negations

    def support(self, claim: str, passage: str) -> float:
        """Share of ``claim``'s content terms that ``passage`` contains (0..1).

        0.0 when the claim has no content terms besides negations (nothing to
        back), or when the claim and the passage sentence that best matches it
        disagree on negation ("X is not allowed" against "X is allowed")."""
        wanted = self.terms(claim)
        if not wanted - NEGATIONS:
            return 0.0
        lo, hi = self._best_span(wanted, passage)
        if bool(negation_words(claim)) != bool(negation_words(passage[lo:hi])):
            return 0.0
        return len(wanted & self.terms(passage)) / len(wanted)

    def best_snippet(self, claim: str, text: str) -> tuple[str, int, int]:
        """The sentence of ``text`` sharing most content terms with ``claim``, with
        its start and end offsets in ``text``."""
        lo, hi = self._best_span(self.terms(claim), text)
        hi = min(hi, lo + SNIPPET_MAX_CHARS)
        return text[lo:hi], lo, hi

    def _best_span(self, wanted: set[str], text: str) -> tuple[int, int]:
        """Offsets of the sentence of ``text`` sharing most of ``wanted`` (the
        first on ties), without surrounding white space."""
        best, best_score = (0, len(text)), -1
        start = 0
        bounds = [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]
        for end in bounds:
            piece = text[start:end]
            score = len(wanted & self.terms(piece))
            if piece.strip() and score > best_score:
                best, best_score = (start, end), score
            start = end
        lo, hi = best
        while lo < hi and text[lo].isspace():
            lo += 1
        while hi > lo and text[hi - 1].isspace():
            hi -= 1
        return lo, hi


def negation_words(text: str) -> set[str]:
    """The negation words in ``text`` (lower-cased; ``n't`` counts as "not")."""
    return {w for w in _words(text) if w in NEGATIONS}


def _words(text: str) -> list[str]:
    """The word tokens of ``text`` as the BM25 analyzer reads them (NFKC,
    lower-cased), with "can't", "won't", "isn't" ... spelled "... not"."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _IRREGULAR_NT.sub(lambda m: _IRREGULAR[m.group(1)] + " not", text)
    return _WORD.findall(_NT.sub(r"\1 not", text))


def says_not_found(answer: str) -> bool:
    """True when ``answer`` opens with the sentence the prompts tell the model to
    say when its sources do not hold the answer (``NOT_FOUND_ANSWER``), in any
    case or punctuation, markers ignored."""
    sentences = split_sentences(answer)
    if not sentences:
        return False
    return _NOT_FOUND_WORDS in " ".join(_words(sentences[0].text))


def resolve_citations(
    answer: str,
    sources: Sequence[Source],
    texts: Mapping[int, str] | None = None,
    *,
    checker: SupportChecker | None = None,
) -> tuple[list[Citation], list[int]]:
    """The sources the answer cites, in order of first citation, and the cited
    numbers that were dropped because no such source was shown to the model.

    With ``texts`` (source number -> the chunk's full text as the model saw it),
    each cited sentence is checked: ``Citation.claims`` holds one entry per
    sentence citing the source, ``supported`` is False when any of them falls
    below the checker's threshold, and ``snippet`` / ``snippet_start`` /
    ``snippet_end`` point at the passage that best supports the first claim.

    Small models often cite nothing: then a non-empty answer is attributed to
    the top source with ``inferred=True`` (not verified: nothing was claimed),
    unless it is the not-found answer (``says_not_found``), which gets none.
    """
    by_number = {s.n: s for s in sources}
    dropped = [n for n in cited_numbers(answer) if n not in by_number]
    claims: dict[int, list[CitedClaim]] = {}
    checker = checker or (SupportChecker() if texts is not None else None)
    for sentence in split_sentences(answer):
        for n in dict.fromkeys(sentence.cited):
            if n not in by_number:
                continue
            claims.setdefault(n, [])
            if texts is not None and checker is not None and n in texts:
                claims[n].append(_claim(checker, sentence.text, texts[n], by_number[n]))
    citations = [_citation(by_number[n], found) for n, found in claims.items()]
    if not citations and sources and answer.strip() and not says_not_found(answer):
        citations = [_inferred(sources[0], answer, texts, checker)]
    return citations, dropped


def _inferred(source: Source, answer: str, texts: Mapping[int, str] | None,
              checker: SupportChecker | None) -> Citation:
    """The top source as an inferred citation; with its text, ``snippet`` and its
    offsets locate the sentence of it that shares most words with the answer
    (so a reader can find where the answer may come from). Located, not checked:
    ``supported`` stays None and there are no claims."""
    fields = source.model_dump()
    text = texts.get(source.n) if texts is not None else None
    if text and checker is not None:
        snippet, lo, hi = checker.best_snippet(answer, text)
        exact = source.end_char - source.start_char == len(text)
        fields.update(snippet=" ".join(snippet.split()) or source.snippet,
                      snippet_start=source.start_char + lo if exact else None,
                      snippet_end=source.start_char + hi if exact else None)
    return Citation(**fields, inferred=True)


def _claim(checker: SupportChecker, sentence: str, text: str, source: Source) -> CitedClaim:
    score = checker.support(sentence, text)
    snippet, lo, hi = checker.best_snippet(sentence, text)
    # Offsets are the document's when the chunk text spans exactly its range.
    exact = source.end_char - source.start_char == len(text)
    return CitedClaim(
        sentence=sentence, support=round(score, 3), supported=score >= checker.min_support,
        snippet=" ".join(snippet.split()),
        snippet_start=source.start_char + lo if exact else None,
        snippet_end=source.start_char + hi if exact else None,
    )


def _citation(source: Source, claims: list[CitedClaim]) -> Citation:
    fields = source.model_dump()
    if not claims:
        return Citation(**fields)
    first = claims[0]
    fields.update(snippet=first.snippet or source.snippet, snippet_start=first.snippet_start,
                  snippet_end=first.snippet_end)
    return Citation(**fields, claims=claims, support=min(c.support for c in claims),
                    supported=all(c.supported for c in claims))
