"""The passage a citation points at (``GET /api/documents/{id}/passage``).

The web UI opens a citation with it: the cited chunks' text, title, page and
display path, with each chunk's place in the text so the citation's document
offsets (``snippet_start``..``snippet_end``) can be highlighted. Only for a
caller who may see the document: the database's document ACL is checked
first, and the chunks are then read through the store's ACL filter too.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from api.auth import PrincipalDep
from api.deps import ServicesDep
from api.schemas import ERROR_RESPONSES
from ingest.intake import visible_document
from retrieval.passages import MAX_PASSAGE_CHUNKS, read_passage
from sirocco.db import session_scope
from sirocco.errors import InvalidInputError, UnavailableError

router = APIRouter(tags=["documents"], responses=ERROR_RESPONSES)

#: Chunk ids are UUIDs (``Chunk.id``); anything else is refused before the store.
CHUNK_ID = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"


class PassagePart(BaseModel):
    """One chunk of the passage: it starts at ``offset`` in ``text`` and spans
    document characters ``start_char``..``end_char``."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "chunk_id": "5b0e6c1a-8d5f-5e7a-9c3b-2f1d0e9a8b7c", "offset": 0, "start_char": 1200,
        "end_char": 1262, "page": 2}]})

    chunk_id: str
    offset: int
    start_char: int
    end_char: int
    page: int | None


class PassagePublic(BaseModel):
    """Cited chunks of one document, joined in text order. A document offset
    ``d`` inside a part lies at ``part.offset + d - part.start_char`` in ``text``."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "doc_id": "3f0c2a9e-1b7d-4c1e-9d55-0a1b2c3d4e5f", "title": "Travel policy",
        "source": "handbook/travel.pdf", "page": 2, "start_char": 1200, "end_char": 1262,
        "text": "Economy class is required for flights under 6 hours. Hotels...",
        "headings": ["Travel", "Flights"],
        "parts": [{"chunk_id": "5b0e6c1a-8d5f-5e7a-9c3b-2f1d0e9a8b7c", "offset": 0,
                   "start_char": 1200, "end_char": 1262, "page": 2}]}]})

    doc_id: str
    title: str
    #: The display path (``source-name/relative/path``, or an upload's file name).
    source: str
    page: int | None
    start_char: int
    end_char: int
    text: str
    headings: list[str]
    parts: list[PassagePart]


@router.get("/api/documents/{doc_id}/passage", response_model=PassagePublic)
async def get_passage(
    doc_id: str, services: ServicesDep, principal: PrincipalDep,
    chunk_id: Annotated[list[str], Query(
        min_length=1, max_length=MAX_PASSAGE_CHUNKS,
        description="A cited chunk (repeatable): a citation's chunk_ids")],
) -> PassagePublic:
    """The text of cited chunks of a document, with title, page, display path and
    offsets (404 unless the caller may see the document: another tenant's, or
    outside the caller's users and groups, is not found, for admins too)."""
    for value in chunk_id:
        if re.fullmatch(CHUNK_ID, value) is None:
            raise InvalidInputError(f"chunk_id {value[:80]!r} is not a chunk id (a UUID, as "
                                    "citations give them)", param="chunk_id")
    # The ACL applies to admins too, as it does to their answers: a passage is
    # content, which an admin key does not open (it manages, it does not read).
    acl_entries = set(principal.acl_entries())

    def check() -> None:
        with session_scope(services.session_factory) as session:
            visible_document(session=session, doc_id=doc_id, tenant=principal.tenant,
                             acl_entries=acl_entries)

    await asyncio.to_thread(check)
    if services.store is None or services.embedder is None:
        raise UnavailableError("the vector store is not available")
    vector = await asyncio.to_thread(services.embedder.embed_query, doc_id)
    passage = await asyncio.to_thread(read_passage, services.store, vector, principal, doc_id,
                                      chunk_id)
    return PassagePublic.model_validate(passage)
