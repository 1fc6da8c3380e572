"""Split a parsed document into overlapping, token-sized chunks.

Rules, in order:
- a chunk never crosses a section (a PDF page, or a heading's body);
- sizes are counted in the embedding model's tokens, so a chunk fits the model;
- a window ends at the latest paragraph break, else sentence end, else line
  break, else word boundary in its second half; never inside a word unless one
  word is longer than half a window;
- the next window starts up to ``overlap_tokens`` before the previous end, at the first sentence
  or line start inside the overlap, else the first word start;
- ``full_text[chunk.start_char:chunk.end_char] == chunk.text`` exactly, where
  ``full_text`` is ``ParsedDocument.full_text``.

The same input always gives the same chunks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ingest.parsers import ParsedDocument
from sirocco.errors import ConfigError
from sirocco.types import Chunk

#: Maps a text to the (start, end) character span of each of its tokens.
TokenSpans = Callable[[str], Sequence[tuple[int, int]]]

_WORDS = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_SENTENCE_END = frozenset(".!?。！？")


def regex_token_spans(text: str) -> list[tuple[int, int]]:
    """Words and punctuation marks: a stand-in when no model tokenizer is at hand
    (it undercounts sub-word tokens)."""
    return [m.span() for m in _WORDS.finditer(text)]


def hf_token_spans(tokenizer: Any) -> TokenSpans:
    """Token spans from a Hugging Face *fast* tokenizer (offset mapping)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; offsets need one "
            "(a model directory with tokenizer.json)"
        )

    def spans(text: str) -> list[tuple[int, int]]:
        enc = tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,  # long sections are expected: no "too long for the model" warning
        )
        return [(int(s), int(e)) for s, e in enc["offset_mapping"] if e > s]

    return spans


def chunk_document(
    parsed: ParsedDocument,
    *,
    doc_id: str,
    source: str,
    tenant: str = "default",
    tokenizer: Any | None = None,
    chunk_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    """Chunks of ``parsed`` in reading order, numbered from 0.

    ``tokenizer`` is a Hugging Face fast tokenizer (the embedder's), a
    ``TokenSpans`` callable, or None for word-level counting."""
    if chunk_tokens < 1:
        raise ConfigError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    if not 0 <= overlap_tokens < chunk_tokens:
        raise ConfigError(
            f"overlap_tokens must be in [0, chunk_tokens={chunk_tokens}), got {overlap_tokens}"
        )
    if tokenizer is None:
        spans_of: TokenSpans = regex_token_spans
    elif hasattr(tokenizer, "is_fast"):
        spans_of = hf_token_spans(tokenizer)
    else:
        spans_of = tokenizer

    chunks: list[Chunk] = []
    for section, base in zip(parsed.sections, parsed.section_starts, strict=True):
        for start, end in _windows(
            section.text, spans_of(section.text), chunk_tokens, overlap_tokens
        ):
            chunks.append(
                Chunk(
                    doc_id=doc_id,
                    chunk_index=len(chunks),
                    text=section.text[start:end],
                    title=parsed.title,
                    source=source,
                    start_char=base + start,
                    end_char=base + end,
                    page=section.page,
                    headings=section.headings,
                    tenant=tenant,
                )
            )
    return chunks


def _windows(
    text: str, spans: Sequence[tuple[int, int]], size: int, overlap: int
) -> list[tuple[int, int]]:
    """Character ranges of the windows over one section."""
    n = len(spans)
    if n == 0:
        stripped = text.strip()
        if not stripped:
            return []
        lead = len(text) - len(text.lstrip())
        return [(lead, lead + len(stripped))]
    out: list[tuple[int, int]] = []
    i = 0
    while True:
        end = min(i + size, n)
        if end < n:
            end = _break_before(text, spans, lo=i + max(1, size // 2), hi=end)
        out.append((spans[i][0], spans[end - 1][1]))
        if end >= n:
            return out
        i = _start_after(text, spans, lo=max(end - overlap, i + 1), hi=end) if overlap else end


def _gap(text: str, spans: Sequence[tuple[int, int]], k: int) -> str:
    """The characters between token k-1 and token k."""
    return text[spans[k - 1][1] : spans[k][0]]


def _ends_sentence(text: str, spans: Sequence[tuple[int, int]], k: int) -> bool:
    return text[spans[k - 1][1] - 1] in _SENTENCE_END and bool(_gap(text, spans, k))


def _break_before(text: str, spans: Sequence[tuple[int, int]], *, lo: int, hi: int) -> int:
    """The token index in (lo, hi] to end a window before: the latest paragraph
    break, else sentence end, else line break, else word boundary; else ``hi``
    (one "word" longer than the window, e.g. a URL, is cut)."""
    sentence = line = word = None
    for k in range(hi, lo, -1):
        gap = _gap(text, spans, k)
        if not gap:  # inside a word: "gig|##awatt", "seat|."
            continue
        if "\n\n" in gap:
            return k
        if sentence is None and _ends_sentence(text, spans, k):
            sentence = k
        if line is None and "\n" in gap:
            line = k
        if word is None:
            word = k
    return sentence or line or word or hi


def _start_after(text: str, spans: Sequence[tuple[int, int]], *, lo: int, hi: int) -> int:
    """Where the next window starts, in [lo, hi): the earliest sentence or line
    start, else the earliest word start, else ``hi`` (no overlap beats a torn word)."""
    word = None
    for k in range(lo, hi):
        gap = _gap(text, spans, k)
        if not gap:
            continue
        if "\n" in gap or _ends_sentence(text, spans, k):
            return k
        if word is None:
            word = k
    return word if word is not None else hi
