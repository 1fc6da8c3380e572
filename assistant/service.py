"""The answering loop: retrieve, build the prompt, stream the model, cite, trace.

Contract of ``Assistant.stream_answer``:
- failures before anything was yielded are raised as ``sirocco.errors``
  (so an API can still answer with a proper HTTP status);
- once output began, a failure ends the stream with one ``error`` event;
- every call records exactly one trace, also on failure or cancellation
  (status "error", the partial answer kept).

Citations: the model is asked to cite sources as ``[n]``; markers are mapped to
the numbered sources and out-of-range ones dropped. Small models often cite
nothing; the ``done`` event then still lists every source shown to the model
(``sources``) and attributes the answer to the top source with
``inferred=True`` (see ``assistant.citations``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from assistant.answers import collect_answer
from assistant.citations import SupportChecker, resolve_citations
from assistant.loop import Turns, converse
from assistant.prompts import (
    NOT_FOUND_ANSWER,
    SYSTEM_PROMPT,
    TOOLS_SYSTEM_PROMPT,
    Prompt,
    build_prompt,
    plain_messages,
    with_conversation,
)
from assistant.query import needs_rewrite, standalone_query
from assistant.schemas import AnswerEvent, AnswerResult, AnswerUsage, Source
from assistant.tools import SourceBook, SourceCatalog, ToolKit, build_tools, offered_specs
from llm.engine import Engine
from llm.tools import ToolContext, ToolResult
from retrieval.packing import pack
from retrieval.rerank import Reranker
from retrieval.store import Caller, SearchFilter, Store
from sirocco.errors import (
    EngineError,
    InvalidInputError,
    SiroccoError,
    UnavailableError,
)
from sirocco.settings import Settings
from sirocco.types import ChatMessage, GenerationOptions, SearchHit, ToolCall, Usage
from traces.recorder import TraceRecorder

logger = logging.getLogger(__name__)

MAX_TOP_K = 50
SNIPPET_CHARS = 300
#: Tokens left for the chat template around the counted message texts.
PROMPT_SLACK_TOKENS = 64
CANCELLED = "cancelled before the answer was complete"
#: Recorded on traces: which prompt produced an answer, and which version of it
#: (a hash of the system prompt, so an edited prompt shows up in exports).
RAG_TEMPLATE = "rag-answer"
PLAIN_TEMPLATE = "plain-chat"
TEMPLATE_VERSION = hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest()[:12]


class QueryEmbedder(Protocol):
    """The part of ``ingest.embedder.Embedder`` the assistant needs (structural,
    so the assistant does not import ``ingest``)."""

    def embed_query(self, text: str) -> list[float]: ...


@dataclass(slots=True)
class _Run:
    """What one answer has produced so far: the trace is built from it."""

    phase: str = "retrieval"
    retrieved: list[dict[str, Any]] = field(default_factory=list)
    prompt: list[dict[str, Any]] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    model: str | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    template: str | None = None

    @property
    def answer(self) -> str:
        return "".join(self.parts)

    def trace_fields(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "retrieved": self.retrieved,
            "prompt": self.prompt,
            "model": self.model,
            "prompt_tokens": self.usage.prompt_tokens if self.usage else None,
            "completion_tokens": self.usage.completion_tokens if self.usage else None,
            "tool_calls": self.tool_calls,
            "tools": self.tools,
            "finish_reason": self.finish_reason,
            "prompt_template": self.template,
            "prompt_template_version": TEMPLATE_VERSION if self.template else None,
        }


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

    async def stream_answer(
        self,
        question: str,
        *,
        tenant: str = "default",
        top_k: int | None = None,
        conversation_id: str | None = None,
        user: str | None = None,
        groups: tuple[str, ...] = (),
        filters: SearchFilter | None = None,
        history: Sequence[ChatMessage] = (),
        tool_turns: Sequence[ChatMessage] = (),
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        options: GenerationOptions | None = None,
        retrieve: bool = True,
        consent: bool | None = None,
        server_tools: Sequence[str] = (),
        is_admin: bool = False,
    ) -> AsyncIterator[AnswerEvent]:
        """Stream ``delta`` (and ``tool_call``) events, then one ``done`` (or
        ``error``) event.

        Retrieval sees only what ``user`` (with ``groups``) of ``tenant`` may see,
        further narrowed by ``filters`` (sources, documents, types, tags, dates).
        ``history``: earlier turns of the conversation; ``tool_turns``: the turns
        after the question (the model's tool calls and their results); ``tools``:
        OpenAI tool definitions passed to the engine, whose calls come back as
        ``tool_call`` events (with tools, an empty retrieval still asks the
        model); ``tool_choice`` ("required" or a named function) is passed on.
        ``retrieve=False`` skips retrieval (plain chat, no sources).
        ``options`` overrides the configured generation settings.
        ``consent``: the user agrees to the trace being used as training data
        (None: the recorder's default).
        ``server_tools``: names of server tools (``assistant.tools``) the model may
        call, run here with the caller's permissions (``is_admin`` included) in
        a bounded loop; their calls come back as ``tool_result`` events.

        A follow-up question is first rewritten with ``history`` into a
        standalone query for retrieval (``assistant.rewrite_query``). Cited
        sentences are checked against their chunks: see ``assistant.citations``.

        Raises ``InvalidInputError`` for an empty question or a bad ``top_k``, and
        any failure before the first event as a ``SiroccoError``. Closing the
        iterator early aborts generation in the engine; the trace is kept.
        """
        question = question.strip()
        if not question:
            raise InvalidInputError("the question is empty")
        k = self._settings.retrieval.top_k if top_k is None else top_k
        if not 1 <= k <= MAX_TOP_K:
            raise InvalidInputError(f"top_k must be between 1 and {MAX_TOP_K}, got {k}")

        handle = await asyncio.to_thread(
            self._recorder.start, question, tenant=tenant, conversation_id=conversation_id,
            user=user, consent=consent,
        )
        run = _Run(tools=list(tools) if tools else None)
        sources: list[Source] = []
        book = SourceBook()
        query = question
        try:
            context = ToolContext(tenant=tenant, user=user, groups=tuple(groups),
                                  is_admin=is_admin)
            registry = (build_tools(self._toolkit, self._settings, context, book, server_tools)
                        if server_tools else None)
            turns = Turns(registry=registry, context=context, tool_choice=tool_choice,
                          client_tools=list(tools or ()),
                          server_specs=offered_specs(registry, server_tools, context)
                          if registry is not None else ())
            # The tool definitions offered, for the trace.
            run.tools = [*turns.server_specs, *turns.client_tools] or None
            hits: list[SearchHit] = []
            if retrieve and needs_rewrite(question, history,
                                          self._settings.assistant.rewrite_query):
                run.phase = "rewrite"
                span = handle.start_span("llm", "rewrite query", **{
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": self._engine.model_name})
                query = await standalone_query(self._engine, question, history,
                                               request_id=handle.trace_id)
                handle.end_span(span, **{"sirocco.query": query})
                run.phase = "retrieval"
            if retrieve:
                caller = Caller(tenant=tenant, user=user, groups=tuple(groups))
                span = handle.start_span("retrieval", "retrieval.search", **{
                    "gen_ai.operation.name": "retrieval", "gen_ai.request.top_k": k,
                    "sirocco.retrieval.mode": self._settings.retrieval.mode})
                hits = await self._retrieve(
                    query, top_k=k, filter=replace(filters or SearchFilter(), caller=caller,
                                                   tenant=None))
                handle.end_span(span, **{"sirocco.retrieval.hits": len(hits)})
                run.retrieved = [
                    {"chunk_id": h.chunk_id, "doc_id": h.doc_id, "score": float(h.score),
                     "rank": rank, "text": h.text, "in_prompt": False}
                    for rank, h in enumerate(hits, start=1)
                ]
                hits = [h for h in hits if h.score >= self._settings.retrieval.min_score]
                # Near-duplicates out, overlapping chunks of a document merged into one source.
                hits = pack(hits)
            if retrieve and not hits and not tools and not turns.server_specs:
                # Nothing to ground an answer on: say so without asking the model.
                handle.mark_first_token()
                run.parts.append(NOT_FOUND_ANSWER)
                yield AnswerEvent(type="delta", text=NOT_FOUND_ANSWER)
                await asyncio.to_thread(
                    self._recorder.finish, handle, status="ok", **run.trace_fields()
                )
                yield AnswerEvent(
                    type="done", citations=[], sources=[], trace_id=handle.trace_id,
                    usage=AnswerUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0),
                    finish_reason="no_sources",
                )
                return

            if hits:
                extra = sum(self._engine.count_tokens(m.content)
                            for m in (*history, *tool_turns))
                prompt = self._build_prompt(question, hits, reserved_tokens=extra)
                for hit in prompt.hits:
                    book.add(hit)
                sources = [_source(n, h) for n, h in enumerate(prompt.hits, start=1)]
                shown = {c for s in sources for c in s.chunk_ids}
                for r in run.retrieved:
                    r["in_prompt"] = r["chunk_id"] in shown
                messages = with_conversation(prompt.messages, history, tool_turns)
                run.template = RAG_TEMPLATE
            else:
                # Nothing retrieved but server tools offered: the model may search,
                # under the same rule as with sources (no guessing).
                grounded = retrieve and bool(turns.server_specs)
                messages = plain_messages(question, history, tool_turns,
                                          system_prompt=TOOLS_SYSTEM_PROMPT if grounded else None)
                run.template = PLAIN_TEMPLATE
            run.prompt = [m.to_openai() for m in messages]
            run.model = self._engine.model_name
            run.phase = "generation"
            options = options or GenerationOptions(
                max_tokens=self._settings.llm.max_tokens,
                temperature=self._settings.llm.temperature,
            )
            turns_stream = converse(self._engine, messages, run=run, handle=handle,
                                    options=options, turns=turns,
                                    settings=self._settings.assistant)
            # aclosing: a consumer closing this stream aborts the engine's generation.
            async with aclosing(turns_stream):
                async for answer_event in turns_stream:
                    yield answer_event
        except Exception as exc:
            error = _domain_error(exc, run.phase)
            logger.warning("answer failed", exc_info=True,
                           extra={"trace_id": handle.trace_id, "phase": run.phase})
            await asyncio.to_thread(
                self._recorder.finish, handle, status="error",
                error=f"{type(exc).__name__}: {exc}", **run.trace_fields(),
            )
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

        # Sources the tools added are citable too; each cited sentence is checked.
        sources = [_source(n, h) for n, h in enumerate(book.hits, start=1)]
        citations, dropped = resolve_citations(run.answer, sources, book.texts,
                                               checker=self._checker)
        unsupported = [c.n for c in citations if c.supported is False]
        if dropped or unsupported:
            logger.info("citations checked", extra={"trace_id": handle.trace_id,
                                                    "dropped": dropped,
                                                    "unsupported": unsupported})
        await asyncio.to_thread(
            self._recorder.finish, handle, status="ok",
            citations=[c.model_dump(mode="json") for c in citations], **run.trace_fields(),
        )
        yield AnswerEvent(
            type="done",
            citations=citations,
            sources=sources,
            trace_id=handle.trace_id,
            usage=_usage(run.usage),
            model=run.model,
            finish_reason=run.finish_reason,
            dropped_citations=dropped,
            query=query if query != question else None,
        )

    async def run_confirmed(self, call: ToolCall, context: ToolContext) -> ToolResult:
        """Run one tool call its user confirmed (``assistant.pending``), with
        their permissions, checked again, within the tools' time budget."""
        registry = build_tools(self._toolkit, self._settings, context, SourceBook(),
                               [call.name])
        limit = self._settings.assistant.max_tool_time_s
        try:
            return await asyncio.wait_for(registry.execute(call, context), timeout=limit)
        except TimeoutError:
            return ToolResult(call.id, call.name,
                              json.dumps({"error": f"timed out after {limit:g}s"}),
                              is_error=True)

    async def answer(
        self,
        question: str,
        *,
        tenant: str = "default",
        top_k: int | None = None,
        conversation_id: str | None = None,
        **retrieval: Any,
    ) -> AnswerResult:
        """The whole answer at once; a failure after output began raises
        ``EngineError``. ``retrieval``: ``user``, ``groups``, ``filters`` as for
        ``stream_answer``."""
        return await collect_answer(self.stream_answer(
            question, tenant=tenant, top_k=top_k, conversation_id=conversation_id, **retrieval))

    async def _search(self, query: str, top_k: int, filter: SearchFilter) -> list[SearchHit]:
        """Retrieval for the search_documents tool: as for the question, packed,
        below ``retrieval.min_score`` left out. ``filter`` must carry the caller."""
        hits = await self._retrieve(query, top_k=top_k, filter=filter)
        return pack([h for h in hits if h.score >= self._settings.retrieval.min_score])

    async def _retrieve(self, question: str, *, top_k: int, filter: SearchFilter
                        ) -> list[SearchHit]:
        """Chunks for ``question``; ``filter`` carries the caller, whose tenant
        and ACL always travel into the Qdrant filter."""
        mode = self._settings.retrieval.mode
        vector = (await asyncio.to_thread(self._embedder.embed_query, question)
                  if mode != "sparse" else None)
        flt = filter
        fetch = top_k if self._reranker is None else max(
            top_k, self._settings.retrieval.rerank_candidates)
        hits = await asyncio.to_thread(self._store.search, vector, top_k=fetch, text=question,
                                       mode=mode, filter=flt)
        if self._reranker is not None:
            hits = await asyncio.to_thread(self._reranker.rerank, question, hits, top_k)
        return hits

    def _build_prompt(self, question: str, hits: list[SearchHit], *,
                      reserved_tokens: int = 0) -> Prompt:
        llm = self._settings.llm
        budget = llm.max_model_len - llm.max_tokens - PROMPT_SLACK_TOKENS - reserved_tokens
        return build_prompt(
            question, hits,
            count_tokens=self._engine.count_tokens if budget > 0 else None,
            max_prompt_tokens=budget if budget > 0 else None,
        )


def _source(n: int, hit: SearchHit) -> Source:
    snippet = " ".join(hit.text.split())
    if len(snippet) > SNIPPET_CHARS:
        snippet = snippet[:SNIPPET_CHARS].rstrip() + "…"
    return Source(
        n=n, chunk_id=hit.chunk_id, doc_id=hit.doc_id, title=hit.title, source=hit.source,
        page=hit.page, start_char=hit.start_char, end_char=hit.end_char, snippet=snippet,
        score=float(hit.score), chunk_ids=list(hit.covers or (hit.chunk_id,)),
    )


def _usage(usage: Usage | None) -> AnswerUsage:
    if usage is None:
        return AnswerUsage()
    return AnswerUsage(prompt_tokens=usage.prompt_tokens,
                       completion_tokens=usage.completion_tokens,
                       total_tokens=usage.total_tokens)


def _domain_error(exc: Exception, phase: str) -> SiroccoError:
    """The error a user should see; unexpected exceptions get a generic message
    (details go to the log and the trace, not to the client)."""
    if isinstance(exc, SiroccoError):
        return exc
    if phase == "generation":
        return EngineError("the language model failed while generating the answer")
    return UnavailableError("searching the indexed documents failed; try again later")
