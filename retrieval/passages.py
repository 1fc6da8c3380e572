"""Read back the passage a citation names: its chunks, for one caller.

A citation carries the ids of the chunks it stands for (``chunk_ids``: one, or
several that context packing merged) and document character offsets of the
sentence-level evidence (``snippet_start``..``snippet_end``). A client shows
the passage with that span highlighted; this module finds the chunks under the
caller's tenant and ACL (inside the store's filter, like every search) and
joins them the way packing did, remembering where each chunk starts in the
joined text so document offsets map onto it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from retrieval.store import SearchFilter, Store
from sirocco.errors import NotFoundError
from sirocco.principal import Principal
from sirocco.types import SearchHit

#: Chunks one passage may join (a merged citation covers a handful).
MAX_PASSAGE_CHUNKS = 16


@dataclass(frozen=True, slots=True)
class PassagePart:
    """One chunk of a passage: where it starts in ``Passage.text`` (``offset``)
    and which document characters it spans."""

    chunk_id: str
    offset: int
    start_char: int
    end_char: int
    page: int | None


@dataclass(frozen=True, slots=True)
class Passage:
    """The joined text of some chunks of one document, in text order."""

    doc_id: str
    title: str
    source: str
    page: int | None
    start_char: int
    end_char: int
    text: str
    headings: tuple[str, ...]
    parts: tuple[PassagePart, ...]


def join_chunks(hits: Sequence[SearchHit]) -> Passage:
    """One passage from chunks of the same document: overlapping chunks add only
    their new tail, chunks with a gap between them are joined by a blank line
    (as ``retrieval.packing`` joins them for the model)."""
    ordered = sorted(hits, key=lambda h: (h.start_char, h.chunk_index))
    first = ordered[0]
    text, end = "", first.start_char
    parts: list[PassagePart] = []
    for h in ordered:
        if parts and h.end_char <= end:
            continue  # inside what we have
        if not parts:
            offset, text = 0, h.text
        elif h.start_char <= end:  # overlap or flush: the new tail only
            offset = len(text) - (end - h.start_char)
            text += h.text[end - h.start_char:]
        else:
            text += "\n\n"
            offset = len(text)
            text += h.text
        parts.append(PassagePart(chunk_id=h.chunk_id, offset=offset, start_char=h.start_char,
                                 end_char=h.end_char, page=h.page))
        end = max(end, h.end_char)
    page = next((h.page for h in ordered if h.page is not None), None)
    return Passage(doc_id=first.doc_id, title=first.title, source=first.source, page=page,
                   start_char=first.start_char, end_char=end, text=text,
                   headings=first.headings, parts=tuple(parts))


def read_passage(store: Store, vector: Sequence[float], caller: Principal, doc_id: str,
                 chunk_ids: Sequence[str]) -> Passage:
    """The chunks ``chunk_ids`` of ``doc_id`` that ``caller`` may see, joined.

    ``vector`` is any query vector of the collection's size: the read is a
    filtered search, so the store's ACL filter applies as it does to every
    search. ``NotFoundError`` when none is visible (unknown, another tenant's,
    or outside the caller's ACL: the same answer, so nothing leaks)."""
    wanted = list(dict.fromkeys(chunk_ids))[:MAX_PASSAGE_CHUNKS]
    hits = store.search(vector, top_k=len(wanted), mode="dense",
                        filter=SearchFilter(caller=caller, doc_ids=[doc_id], chunk_ids=wanted))
    hits = [h for h in hits if h.doc_id == doc_id and h.chunk_id in wanted]
    if not hits:
        raise NotFoundError(f"passage of document {doc_id!r} not found")
    return join_chunks(hits)
