"""The answering loop: retrieve, build the prompt, stream the model, cite, trace.

Contract of ``Assistant.stream_answer(request, principal)``:
- failures before anything was yielded are raised as ``sirocco.errors``
  (so an API can still answer with a proper HTTP status);
- once output began, a failure ends the stream with one ``error`` event;
- every call records exactly one trace, also on failure or cancellation
  (status "error", the partial answer kept).

Citations: the model cites sources as ``[n]`` (``llm.answer_format``); markers
are mapped to the numbered sources, out-of-range ones dropped; an answer citing
nothing is attributed to the top source, ``inferred=True`` (``assistant.citations``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace
from typing import Any, Protocol

from assistant.answers import collect_answer
from assistant.citations import SupportChecker, resolve_citations
from assistant.loop import Turns, converse
from assistant.prompts import (
    CITED_SYSTEM_PROMPT,
    QUOTED_SYSTEM_PROMPT,
    SYSTEM_PROMPT,
    TOOLS_SYSTEM_PROMPT,
    Prompt,
    build_prompt,
    focus_sentences,
    not_covered_answer,
    plain_messages,
    with_conversation,
)
from assistant.query import needs_rewrite, standalone_query
from assistant.request import AnswerRequest, RetrievalSpec
from assistant.run import (
    CITED_TEMPLATE,
    PLAIN_TEMPLATE,
    RAG_TEMPLATE,
    AnswerRun,
    domain_error,
    generation_options,
    source_of,
    usage_of,
)
from assistant.schemas import AnswerEvent, AnswerResult, AnswerUsage
from assistant.tools import SourceBook, SourceCatalog, ToolKit, build_tools, offered_specs
from llm.engine import Engine
from llm.tools import ToolResult
from retrieval.packing import pack
from retrieval.rerank import Reranker
from retrieval.store import SearchFilter, SearchMode, Store
from sirocco.errors import InvalidInputError, SiroccoError
from sirocco.principal import Principal
from sirocco.settings import Settings
from sirocco.types import ChatMessage, SearchHit, ToolCall
from traces.recorder import TraceHandle, TraceRecorder

logger = logging.getLogger(__name__)

MAX_TOP_K = 50
MAX_RELATED = 3  # sources a refusal lists as related
#: Tokens left for the chat template around the counted message texts.
PROMPT_SLACK_TOKENS = 64
CANCELLED = "cancelled before the answer was complete"


class QueryEmbedder(Protocol):
    """The part of ``ingest.embedding.base.Embedder`` the assistant needs (structural,
    so the assistant does not import ``ingest``)."""

    def embed_query(self, text: str) -> list[float]: ...


class Assistant:
    """Answers questions from the indexed documents, with citations."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        embedder: QueryEmbedder,
        recorder: TraceRecorder,
        settings: Settings,
        reranker: Reranker | None = None,
        *,
        catalog: SourceCatalog | None = None,
        tool_transport: Any | None = None,
    ) -> None:
        self._engine = engine
        self._store = store
        self._embedder = embedder
        self._recorder = recorder
        self._settings = settings
        self._reranker = reranker
        self._checker = SupportChecker(settings.retrieval.sparse_language,
                                       settings.assistant.citation_min_support)
        # The ports server tools use; ``catalog`` lists sources (list_sources),
        # ``tool_transport`` replaces the network for HTTP tools (tests).
        self._toolkit = ToolKit(store=store, embed=embedder.embed_query, search=self._search,
                                catalog=catalog, transport=tool_transport)

    async def stream_answer(self, request: AnswerRequest, principal: Principal
                            ) -> AsyncGenerator[AnswerEvent, None]:
        """Stream ``delta`` (and ``tool_call`` / ``tool_result`` /
        ``tool_pending``) events, then one ``done`` (or ``error``) event.

        Retrieval sees only what ``principal`` may see, narrowed by
        ``request.retrieval.filters``. A follow-up is first rewritten with the
        history into a standalone query (``assistant.rewrite_query``); cited
        sentences are checked against their chunks (``assistant.citations``);
        server tools run with the principal's permissions in a bounded loop
        (``assistant.loop``). Raises ``InvalidInputError`` for an empty question
        or a bad ``top_k``, and any failure before the first event as a
        ``SiroccoError``. Closing the iterator early aborts generation in the
        engine; the trace is kept.
        """
        question, k = self._checked(request)
        handle = await asyncio.to_thread(
            self._recorder.start, question, tenant=principal.tenant,
            conversation_id=request.conversation_id, user=principal.user,
            consent=request.consent)
        run = AnswerRun(tools=list(request.tools.client) or None)
        book = SourceBook()
        query = question
        try:
            turns = self._turns(request, principal, book)
            run.tools = [*turns.server_specs, *turns.client_tools] or None
            query, hits = await self._gather(request, principal, k, handle, run)
            if request.retrieval.enabled and not turns.client_tools \
                    and not turns.server_specs and (not hits or run.not_covered):
                # A trace is a conversation: exports need a user turn first.
                run.prompt = [m.to_openai() for m in plain_messages(question, request.history)]
                async for event in self._not_found(handle, run, hits):
                    yield event
                return
            messages = self._messages(request, hits, book, run, turns)
            options = generation_options(self._settings.llm, request.options, run.shown)
            stream = converse(self._engine, messages, run=run, handle=handle,
                              options=options, turns=turns, settings=self._settings.assistant)
            # aclosing: a consumer closing this stream aborts the engine's generation.
            async with aclosing(stream):
                async for event in stream:
                    yield event
        except Exception as exc:
            error = domain_error(exc, run.phase)
            logger.warning("answer failed", exc_info=True,
                           extra={"trace_id": handle.trace_id, "phase": run.phase})
            await asyncio.to_thread(
                self._recorder.finish, handle, status="error",
                error=f"{type(exc).__name__}: {exc}", **run.trace_fields())
            if not run.parts:
                if error is exc:
                    raise
                raise error from exc
            yield AnswerEvent(type="error", message=error.message, code=error.code,
                              trace_id=handle.trace_id)
            return
        except BaseException:
            # Cancelled or closed by the consumer: no awaiting here (the task may
            # be cancelled), so the trace is written synchronously.
            self._recorder.finish(handle, status="error", error=CANCELLED, **run.trace_fields())
            raise
        yield await self._finish(handle, run, book, question, query)

    async def answer(self, request: AnswerRequest, principal: Principal) -> AnswerResult:
        """The whole answer at once; a failure after output began raises
        ``EngineError``."""
        return await collect_answer(self.stream_answer(request, principal))

    async def run_confirmed(self, call: ToolCall, principal: Principal) -> ToolResult:
        """Run one tool call its user confirmed (``assistant.pending``), with
        their permissions, checked again, within the tools' time budget."""
        registry = build_tools(self._toolkit, self._settings, principal, SourceBook(),
                               [call.name])
        limit = self._settings.assistant.max_tool_time_s
        try:
            return await asyncio.wait_for(registry.execute(call, principal), timeout=limit)
        except TimeoutError:
            return ToolResult(call.id, call.name,
                              json.dumps({"error": f"timed out after {limit:g}s"}),
                              is_error=True)

    async def search(self, query: str, principal: Principal,
                     retrieval: RetrievalSpec | None = None) -> list[SearchHit]:
        """Retrieval only (``POST /api/search``): the sources an answer to
        ``query`` would be grounded on, found as the chat finds them (search in
        ``retrieval.mode``, default ``retrieval.mode`` of the settings, within
        the principal's tenant and ACL, narrowed by ``retrieval.filters``;
        reranked; below ``retrieval.min_score`` left out; packed), best first.
        At most ``top_k`` hits, fewer when packing merged adjacent chunks of a
        document or dropped a near-duplicate. Raises ``InvalidInputError`` for
        an empty query or a bad ``top_k``, ``UnavailableError`` when the search
        fails unexpectedly."""
        spec = retrieval or RetrievalSpec()
        text = query.strip()
        if not text:
            raise InvalidInputError("the query is empty", param="query")
        k = self._top_k(spec.top_k)
        flt = replace(spec.filters or SearchFilter(), caller=principal, tenant=None)
        try:
            return await self._search(text, k, flt, mode=spec.mode)
        except SiroccoError:
            raise
        except Exception as exc:
            logger.warning("search failed", exc_info=True)
            raise domain_error(exc, "retrieval") from exc

    # ------------------------------------------------------------------- steps

    def _checked(self, request: AnswerRequest) -> tuple[str, int]:
        """The question stripped, and the number of chunks to retrieve."""
        question = request.question.strip()
        if not question:
            raise InvalidInputError("the question is empty")
        return question, self._top_k(request.retrieval.top_k)

    def _top_k(self, top_k: int | None) -> int:
        """The number of chunks to retrieve: ``top_k``, or ``retrieval.top_k``."""
        k = self._settings.retrieval.top_k if top_k is None else top_k
        if not 1 <= k <= MAX_TOP_K:
            raise InvalidInputError(f"top_k must be between 1 and {MAX_TOP_K}, got {k}",
                                    param="top_k")
        return k

    def _turns(self, request: AnswerRequest, principal: Principal, book: SourceBook) -> Turns:
        """The tools of this answer: server tools the principal may use, the
        client's own, and the first turn's choice."""
        names = request.tools.server
        registry = (build_tools(self._toolkit, self._settings, principal, book, names)
                    if names else None)
        return Turns(registry=registry, context=principal, tool_choice=request.tools.choice,
                     client_tools=list(request.tools.client),
                     server_specs=offered_specs(registry, names, principal)
                     if registry is not None else ())

    async def _gather(self, request: AnswerRequest, principal: Principal, k: int,
                      handle: TraceHandle, run: AnswerRun) -> tuple[str, list[SearchHit]]:
        """The query retrieval used (a follow-up rewritten) and the packed hits
        above ``retrieval.min_score``; ([], the question) without retrieval."""
        question = request.question.strip()
        if not request.retrieval.enabled:
            return question, []
        query = question
        if needs_rewrite(question, request.history, self._settings.assistant.rewrite_query):
            run.phase = "rewrite"
            span = handle.start_span("llm", "rewrite query", **{
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": self._engine.model_name})
            query = await standalone_query(self._engine, question, request.history,
                                           request_id=handle.trace_id)
            handle.end_span(span, **{"sirocco.query": query})
            run.phase = "retrieval"
        mode = request.retrieval.mode or self._settings.retrieval.mode
        span = handle.start_span("retrieval", "retrieval.search", **{
            "gen_ai.operation.name": "retrieval", "gen_ai.request.top_k": k,
            "sirocco.retrieval.mode": mode})
        flt = replace(request.retrieval.filters or SearchFilter(), caller=principal, tenant=None)
        floor = self._settings.assistant.refusal_min_score
        vector = (await asyncio.to_thread(self._embedder.embed_query, query)
                  if mode != "sparse" or floor is not None else None)
        hits = await self._retrieve(query, top_k=k, filter=flt, mode=mode, vector=vector)
        found: dict[str, Any] = {"sirocco.retrieval.hits": len(hits)}
        if hits and vector is not None and floor is not None:
            relevance = await self._relevance(vector, flt)
            run.not_covered = relevance < floor
            found["sirocco.retrieval.relevance"] = round(relevance, 4)
        handle.end_span(span, **found)
        run.retrieved = [
            {"chunk_id": h.chunk_id, "doc_id": h.doc_id, "score": float(h.score),
             "rank": rank, "text": h.text, "in_prompt": False}
            for rank, h in enumerate(hits, start=1)]
        return query, self._sources(hits)

    async def _not_found(self, handle: TraceHandle, run: AnswerRun, hits: list[SearchHit]
                         ) -> AsyncGenerator[AnswerEvent, None]:
        """Nothing to ground an answer on (no hits, or none as close to the
        question as ``assistant.refusal_min_score`` asks): say so without asking
        the model; the closest sources are listed as related, not cited."""
        handle.mark_first_token()
        related = [source_of(n, h) for n, h in enumerate(hits[:MAX_RELATED], start=1)]
        text = not_covered_answer([s.title or s.source for s in related])
        run.parts.append(text)
        yield AnswerEvent(type="delta", text=text)
        await asyncio.to_thread(self._recorder.finish, handle, status="ok",
                                **run.trace_fields())
        yield AnswerEvent(type="done", citations=[], sources=related, trace_id=handle.trace_id,
                          usage=AnswerUsage(prompt_tokens=0, completion_tokens=0,
                                            total_tokens=0),
                          finish_reason="not_covered" if related else "no_sources")

    def _messages(self, request: AnswerRequest, hits: list[SearchHit], book: SourceBook,
                  run: AnswerRun, turns: Turns) -> list[ChatMessage]:
        """The chat for the model: numbered sources and the question, in the
        conversation; without hits, the plain chat (tools may still search)."""
        if hits:
            extra = sum(self._engine.count_tokens(m.content)
                        for m in (*request.history, *request.tool_turns))
            tooled = bool(turns.server_specs or turns.client_tools)
            prompt = self._build_prompt(request.question.strip(), hits, reserved_tokens=extra,
                                        cited=not tooled)
            if self._settings.llm.answer_format != "free" and not tooled:
                run.shown = focus_sentences(request.question, [h.text for h in prompt.hits],
                                            self._checker.terms)
            for hit in prompt.hits:
                book.add(hit)
            shown = {c for n, h in enumerate(prompt.hits, start=1)
                     for c in source_of(n, h).chunk_ids}
            for r in run.retrieved:
                r["in_prompt"] = r["chunk_id"] in shown
            messages = with_conversation(prompt.messages, request.history, request.tool_turns)
            run.template = CITED_TEMPLATE if run.shown else RAG_TEMPLATE
        else:
            # Nothing retrieved but server tools offered: the model may search,
            # under the same rule as with sources (no guessing).
            grounded = request.retrieval.enabled and bool(turns.server_specs)
            messages = plain_messages(request.question.strip(), request.history,
                                      request.tool_turns,
                                      system_prompt=TOOLS_SYSTEM_PROMPT if grounded else None)
            run.template = PLAIN_TEMPLATE
        run.prompt = [m.to_openai() for m in messages]
        run.model = self._engine.model_name
        run.phase = "generation"
        return messages

    async def _finish(self, handle: TraceHandle, run: AnswerRun, book: SourceBook,
                      question: str, query: str) -> AnswerEvent:
        """Check the citations (sources the tools added are citable too),
        record the trace, and make the ``done`` event."""
        sources = [source_of(n, h) for n, h in enumerate(book.hits, start=1)]
        citations, dropped = resolve_citations(run.answer, sources, book.texts,
                                               checker=self._checker)
        unsupported = [c.n for c in citations if c.supported is False]
        if dropped or unsupported:
            logger.info("citations checked", extra={"trace_id": handle.trace_id,
                                                    "dropped": dropped,
                                                    "unsupported": unsupported})
        await asyncio.to_thread(
            self._recorder.finish, handle, status="ok",
            citations=[c.model_dump(mode="json") for c in citations], **run.trace_fields())
        return AnswerEvent(
            type="done", citations=citations, sources=sources, trace_id=handle.trace_id,
            usage=usage_of(run.usage), model=run.model, finish_reason=run.finish_reason,
            dropped_citations=dropped, query=query if query != question else None)

    # --------------------------------------------------------------- retrieval

    async def _search(self, query: str, top_k: int, filter: SearchFilter, *,
                      mode: SearchMode | None = None) -> list[SearchHit]:
        """Retrieval for the search_documents tool and ``search``: as for the
        question, packed, below ``retrieval.min_score`` left out. ``filter``
        must carry the caller."""
        return self._sources(await self._retrieve(query, top_k=top_k, filter=filter, mode=mode))

    def _sources(self, hits: list[SearchHit]) -> list[SearchHit]:
        """Retrieved chunks as sources: below ``retrieval.min_score`` out,
        near-duplicates out, overlapping chunks of a document merged into one."""
        return pack([h for h in hits if h.score >= self._settings.retrieval.min_score])

    async def _relevance(self, vector: list[float], filter: SearchFilter) -> float:
        """The dense (cosine) similarity of the closest chunk the caller may see:
        what ``assistant.refusal_min_score`` is compared with."""
        best = await asyncio.to_thread(self._store.search, vector, top_k=1, mode="dense",
                                       filter=filter)
        return float(best[0].score) if best else -1.0

    async def _retrieve(self, question: str, *, top_k: int, filter: SearchFilter,
                        mode: SearchMode | None = None, vector: list[float] | None = None
                        ) -> list[SearchHit]:
        """Chunks for ``question`` in ``mode`` (None: ``retrieval.mode``);
        ``filter`` carries the caller, whose tenant and ACL always travel into
        the Qdrant filter. ``vector``: the question's embedding, if computed."""
        mode = mode or self._settings.retrieval.mode
        if vector is None and mode != "sparse":
            vector = await asyncio.to_thread(self._embedder.embed_query, question)
        fetch = top_k if self._reranker is None else max(
            top_k, self._settings.retrieval.rerank_candidates)
        hits = await asyncio.to_thread(self._store.search, vector, top_k=fetch, text=question,
                                       mode=mode, filter=filter)
        if self._reranker is not None:
            hits = await asyncio.to_thread(self._reranker.rerank, question, hits, top_k)
        return hits

    def _build_prompt(self, question: str, hits: list[SearchHit], *,
                      reserved_tokens: int = 0, cited: bool = True) -> Prompt:
        llm = self._settings.llm
        budget = llm.max_model_len - llm.max_tokens - PROMPT_SLACK_TOKENS - reserved_tokens
        return build_prompt(
            question, hits,
            count_tokens=self._engine.count_tokens if budget > 0 else None,
            max_prompt_tokens=budget if budget > 0 else None,
            system_prompt=SYSTEM_PROMPT if not cited or llm.answer_format == "free"
            else CITED_SYSTEM_PROMPT if llm.answer_format == "cited" else QUOTED_SYSTEM_PROMPT,
        )
