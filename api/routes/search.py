"""Retrieval only (``POST /api/search``): the sources the chat would ground an
answer on, for REST integrations and the LangChain retriever
(``api.client.langchain``); no model is asked, so no generation slot is taken.
The caller's tenant and document ACL apply exactly as in the chat."""

from __future__ import annotations

import time

from fastapi import APIRouter

from api.auth import PrincipalDep
from api.deps import ServicesDep, SettingsDep
from api.schemas import ERROR_RESPONSES, SearchHitPublic, SearchRequest, SearchResponse
from sirocco.errors import InvalidInputError

router = APIRouter(tags=["search"], responses=ERROR_RESPONSES)


@router.post("/api/search", response_model=SearchResponse)
async def search(body: SearchRequest, services: ServicesDep, principal: PrincipalDep,
                 settings: SettingsDep) -> SearchResponse:
    """The best chunks for a query among the documents the caller may see,
    found as ``POST /api/chat`` finds its sources (search, rerank,
    ``retrieval.min_score``, packing), best first, with the citation fields
    (400 for a blank query or one over ``api.max_question_chars``; 422 for a
    body that does not match the schema)."""
    limit = settings.api.max_question_chars
    if len(body.query) > limit:
        raise InvalidInputError(f"the query has {len(body.query)} characters; the limit is "
                                f"{limit}", param="query")
    started = time.perf_counter()
    hits = await services.assistant.search(body.query, principal, body.to_retrieval_spec())
    took_ms = (time.perf_counter() - started) * 1000
    return SearchResponse(hits=[SearchHitPublic.of(n, h) for n, h in enumerate(hits, start=1)],
                          query=body.query.strip(),
                          mode=body.mode or settings.retrieval.mode, took_ms=round(took_ms, 1))
