"""How chunks map onto Qdrant points and filters onto Qdrant's filter
language: the payload of a point, the filter of a ``SearchFilter``, a
``SearchHit`` from a scored point. Beside the store adapter, apart from its
client handling, so any Qdrant-speaking adapter shares one mapping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qdrant_client import models as qm

from retrieval.store import SearchFilter
from sirocco.types import Chunk, SearchHit


def index_text(c: Chunk) -> str:
    """What BM25 indexes for a chunk: its title, heading path and text."""
    return "\n".join((c.title, *c.headings, c.text))


def payload(c: Chunk) -> dict[str, Any]:
    """What a chunk's point carries: the fields search filters and returns."""
    return {
        "doc_id": c.doc_id,
        "chunk_index": c.chunk_index,
        "text": c.text,
        "title": c.title,
        "source": c.source,
        "page": c.page,
        "headings": list(c.headings),
        "start_char": c.start_char,
        "end_char": c.end_char,
        "tenant": c.tenant,
        "acl": list(c.acl),
        "source_id": c.source_id,
        "mime_type": c.mime_type,
        "tags": list(c.tags),
        "modified_at": c.modified_at,
    }


def documents_selector(doc_ids: Sequence[str], keep: Sequence[str] = ()) -> qm.FilterSelector:
    """Every point of these documents but ``keep`` (for deletes and payload updates)."""
    return qm.FilterSelector(filter=qm.Filter(
        must=[qm.FieldCondition(key="doc_id", match=qm.MatchAny(any=list(doc_ids)))],
        must_not=[qm.HasIdCondition(has_id=list(keep))] if keep else None))


def qdrant_filter(f: SearchFilter) -> qm.Filter | None:
    """The Qdrant filter for ``f``: every condition must hold."""
    must: list[qm.Condition] = []

    def any_of(key: str, values: Sequence[str] | None) -> None:
        if values is not None:
            must.append(qm.FieldCondition(key=key, match=qm.MatchAny(any=list(values))))

    tenant = f.caller.tenant if f.caller is not None else f.tenant
    if tenant is not None:
        must.append(qm.FieldCondition(key="tenant", match=qm.MatchValue(value=tenant)))
    if f.caller is not None:
        any_of("acl", f.caller.acl_entries())
    any_of("doc_id", f.doc_ids)
    if f.chunk_ids is not None:
        must.append(qm.HasIdCondition(has_id=list(f.chunk_ids)))
    any_of("source_id", f.source_ids)
    any_of("mime_type", f.mime_types)
    any_of("tags", f.tags)
    if f.modified_after is not None or f.modified_before is not None:
        must.append(qm.FieldCondition(key="modified_at", range=qm.Range(
            gte=f.modified_after, lte=f.modified_before)))
    return qm.Filter(must=must) if must else None


def floats(v: Sequence[float] | None) -> list[float]:
    """A vector as Qdrant's client wants it."""
    return [float(x) for x in v or ()]


def hit_of(point: qm.ScoredPoint) -> SearchHit:
    """A search result from a scored point's payload."""
    return hit_from(str(point.id), float(point.score), point.payload or {})


def hit_from(point_id: str, score: float, p: dict[str, Any]) -> SearchHit:
    """A search result from a point's id, score and payload (any Qdrant engine)."""
    return SearchHit(
        chunk_id=point_id,
        doc_id=p["doc_id"],
        chunk_index=int(p["chunk_index"]),
        text=p.get("text", ""),
        title=p.get("title", ""),
        source=p.get("source", ""),
        score=score,
        start_char=int(p.get("start_char", 0)),
        end_char=int(p.get("end_char", 0)),
        page=p.get("page"),
        headings=tuple(p.get("headings") or ()),
    )
