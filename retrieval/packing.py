"""Context packing: from ranked chunks to the sources a model reads.

1. Near-duplicates go (a chunk whose word shingles mostly repeat a better-ranked
   chunk's: the same paragraph in two files, a re-sent e-mail), MMR-style
   but lexical, so no vectors are needed.
2. Chunks of one document that overlap or touch (consecutive ``chunk_index``)
   merge into one source with one continuous text: the model reads a passage
   once instead of twice with the overlap repeated. The merged source sits at
   the rank of its best chunk and remembers every chunk it covers, so a
   citation of it maps back to real chunk ids and character offsets.
3. Sources are kept best first while they fit the token budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from sirocco.types import SearchHit

#: Share of a chunk's 3-word shingles already seen in a better chunk to drop it.
DUPLICATE_OVERLAP = 0.8
_WORD = re.compile(r"\w+", re.UNICODE)


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def drop_near_duplicates(hits: Sequence[SearchHit],
                         threshold: float = DUPLICATE_OVERLAP) -> list[SearchHit]:
    """``hits`` without chunks that mostly repeat a better-ranked one (chunks of
    the same document overlap by design and are merged instead, not dropped)."""
    kept: list[tuple[SearchHit, set[tuple[str, ...]]]] = []
    for h in hits:
        sh = shingles(h.text)
        if sh and any(k.doc_id != h.doc_id and len(sh & ks) >= threshold * len(sh)
                      for k, ks in kept):
            continue
        kept.append((h, sh))
    return [h for h, _ in kept]


def merge_adjacent(hits: Sequence[SearchHit]) -> list[SearchHit]:
    """Merge chunks of one document that overlap or are consecutive into one
    hit at the rank of its best chunk; ``covers`` lists the chunk ids it
    stands for."""
    rank = {id(h): r for r, h in enumerate(hits)}
    by_doc: dict[str, list[SearchHit]] = {}
    for h in hits:
        by_doc.setdefault(h.doc_id, []).append(h)
    groups: list[list[SearchHit]] = []
    for doc_hits in by_doc.values():
        run: list[SearchHit] = []
        for h in sorted(doc_hits, key=lambda h: (h.start_char, h.chunk_index)):
            if run and not _touch(run[-1], h):
                groups.append(run)
                run = []
            run.append(h)
        groups.append(run)
    groups.sort(key=lambda g: min(rank[id(h)] for h in g))
    return [_join(sorted(g, key=lambda h: rank[id(h)])) for g in groups]


def pack(
    hits: Sequence[SearchHit],
    *,
    count_tokens: Callable[[SearchHit], int] | None = None,
    budget: int | None = None,
) -> list[SearchHit]:
    """De-duplicated, merged sources, best first; with ``count_tokens`` (the cost
    of one source) and ``budget``, the longest prefix that fits."""
    sources = merge_adjacent(drop_near_duplicates(hits))
    if count_tokens is None or budget is None:
        return sources
    kept: list[SearchHit] = []
    used = 0
    for s in sources:
        cost = count_tokens(s)
        if used + cost > budget:
            break
        kept.append(s)
        used += cost
    return kept


def _touch(a: SearchHit, b: SearchHit) -> bool:
    """``b`` (later in the text) continues ``a``: the next chunk, or overlapping."""
    return b.chunk_index - a.chunk_index == 1 or b.start_char < a.end_char


def _join(group: list[SearchHit]) -> SearchHit:
    best = group[0]
    if len(group) == 1:
        return best
    ordered = sorted(group, key=lambda h: (h.start_char, h.chunk_index))
    text, end = ordered[0].text, ordered[0].end_char
    for h in ordered[1:]:
        if h.end_char <= end:
            continue  # inside what we have
        if h.start_char <= end:  # overlap or flush: append only the new tail
            text += h.text[end - h.start_char:]
        else:  # consecutive chunks with a gap (whitespace, a section break) between
            text += "\n\n" + h.text
        end = h.end_char
    return replace(best, text=text, start_char=ordered[0].start_char, end_char=end,
                   page=best.page if best.page is not None else ordered[0].page,
                   covers=tuple(h.chunk_id for h in ordered))
