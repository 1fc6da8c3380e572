"""What the ``list_sources`` tool lists: sources with documents the caller may see.

Lives on the API side because it reads the ingestion tables (``ingest.models``),
which the assistant does not import; ``build_services`` hands it to the
assistant as its ``SourceCatalog``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ingest.models import Document, Source
from sirocco.db import session_scope
from sirocco.principal import Principal
from sirocco.types import EVERYONE


def source_catalog(session_factory: sessionmaker[Session]
                   ) -> Callable[[Principal], list[dict[str, Any]]]:
    """``list_sources(caller)``: ``{"id", "name", "kind", "documents"}`` for each
    source of the caller's tenant holding at least one indexed document whose
    ACL names the caller (counts only those), by name."""

    def list_sources(caller: Principal) -> list[dict[str, Any]]:
        principals = set(caller.acl_entries())
        with session_scope(session_factory) as session:
            sources = {s.id: s for s in session.scalars(
                select(Source).where(Source.tenant == caller.tenant))}
            counts: dict[str, int] = {}
            for source_id, acl in session.execute(
                    select(Document.source_id, Document.acl).where(
                        Document.tenant == caller.tenant, Document.status == "done",
                        Document.source_id.is_not(None))):
                if source_id is not None and principals & set(acl or [EVERYONE]):
                    counts[source_id] = counts.get(source_id, 0) + 1
            return sorted(({"id": sid, "name": sources[sid].name, "kind": sources[sid].kind,
                            "documents": n} for sid, n in counts.items() if sid in sources),
                          key=lambda s: s["name"])

    return list_sources
