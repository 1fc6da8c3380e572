"""The vector store port, its search filter, and its factory."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from sirocco.errors import InvalidInputError
from sirocco.principal import Principal
from sirocco.types import Chunk, SearchHit

SearchMode = Literal["dense", "sparse", "hybrid"]
SEARCH_MODES: tuple[SearchMode, ...] = ("dense", "sparse", "hybrid")


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Restrictions applied inside Qdrant (never after the search).

    ``caller`` adds its tenant and ACL; None means no ACL restriction, for
    trusted internal callers (ingestion, evaluation). Each other field, when
    set, keeps only chunks that match one of its values; dates are Unix seconds
    of the document's modification time, bounds included.
    """

    caller: Principal | None = None
    tenant: str | None = None
    doc_ids: Sequence[str] | None = None
    #: Point ids (``Chunk.id``): read given chunks, e.g. the passage a citation names.
    chunk_ids: Sequence[str] | None = None
    source_ids: Sequence[str] | None = None
    mime_types: Sequence[str] | None = None
    tags: Sequence[str] | None = None
    modified_after: float | None = None
    modified_before: float | None = None

    def __post_init__(self) -> None:
        if (self.caller is not None and self.tenant is not None
                and self.caller.tenant != self.tenant):
            raise InvalidInputError("a search cannot name a tenant other than the caller's")


class Store(Protocol):
    def ensure_collection(self, dim: int) -> None:
        """Create the collection (and payload indexes) if missing; idempotent."""
        ...

    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        """Write chunks with deterministic ids: re-upserting never duplicates."""
        ...

    def delete_document(self, doc_id: str) -> None:
        """Remove every chunk of a document."""
        ...

    def replace_documents(
        self, doc_ids: Sequence[str], chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]
    ) -> None:
        """Remove every chunk of ``doc_ids``, then write ``chunks`` (of those
        documents), as one store operation."""
        ...

    def set_access(self, doc_ids: Sequence[str], *, acl: Sequence[str],
                   tags: Sequence[str]) -> None:
        """Rewrite the ACL and tags every chunk of ``doc_ids`` carries, at once
        (no re-embedding): a narrowed source stops showing at the next search."""
        ...

    def search(
        self,
        vector: Sequence[float] | None,
        *,
        top_k: int,
        tenant: str | None = None,
        doc_ids: Sequence[str] | None = None,
        text: str | None = None,
        mode: SearchMode | None = None,
        filter: SearchFilter | None = None,
    ) -> list[SearchHit]:
        """The ``top_k`` best chunks, best first, filtered inside Qdrant.

        ``vector`` is the dense query embedding, ``text`` the query for BM25;
        ``mode`` defaults to "hybrid" when both are given, else to whichever is.
        ``tenant`` and ``doc_ids`` are shorthands merged into ``filter``.
        """
        ...

    def count(self, *, doc_id: str | None = None) -> int:
        """Number of stored chunks (of one document when ``doc_id`` is given)."""
        ...

    def begin_rebuild(self, dim: int) -> str:
        """Start filling a new collection behind the alias (writes go there too)."""
        ...

    def finish_rebuild(self) -> str | None:
        """Swap the alias to the rebuilt collection, atomically."""
        ...

    def abandon_rebuild(self) -> str | None:
        """Drop the collection being built (its name; None when there is none);
        the live one is untouched."""
        ...

    def index_status(self) -> dict[str, Any]:
        """The alias, the live collection, the one being built (or None), and
        their point counts (``live_points``, ``building_points``)."""
        ...

    def hold(self) -> AbstractContextManager[Store]:
        """Keep one connection open for the operations inside the block (local
        mode: other processes wait until it ends)."""
        ...

    def close(self) -> None:
        ...


def resolve_mode(vector: object, text: str | None, mode: SearchMode | None) -> SearchMode:
    """The search mode for the inputs given; ``InvalidInputError`` when the
    mode needs an input that is missing or is unknown."""
    if mode is None:
        mode = "hybrid" if vector is not None and text else ("sparse" if text else "dense")
    if mode not in SEARCH_MODES:
        raise InvalidInputError(f"unknown search mode {mode!r}; valid: {SEARCH_MODES}")
    if mode in ("dense", "hybrid") and vector is None:
        raise InvalidInputError(f"a {mode} search needs the query vector")
    if mode in ("sparse", "hybrid") and not (text and text.strip()):
        raise InvalidInputError(f"a {mode} search needs the query text")
    return mode


def search_filter(filter: SearchFilter | None, *, tenant: str | None,
                  doc_ids: Sequence[str] | None, top_k: int) -> SearchFilter | None:
    """The filter an adapter's ``search`` applies: ``filter`` narrowed by the
    ``tenant`` and ``doc_ids`` arguments; None when nothing can match (no hits
    asked for, or an empty ``doc_ids``), so the adapter returns no hits."""
    flt = filter or SearchFilter()
    if tenant is not None or doc_ids is not None:
        flt = replace(flt, tenant=tenant or flt.tenant,
                      doc_ids=doc_ids if doc_ids is not None else flt.doc_ids)
    if top_k <= 0 or (flt.doc_ids is not None and not flt.doc_ids):
        return None
    return flt
