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
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from assistant.citations import resolve_citations
from assistant.prompts import NOT_FOUND_ANSWER, Prompt, build_prompt
from assistant.schemas import AnswerEvent, AnswerResult, AnswerUsage, Source
from llm.engine import Engine
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
from sirocco.types import GenerationOptions, SearchHit, Usage
from traces.recorder import TraceRecorder

logger = logging.getLogger(__name__)

MAX_TOP_K = 50
SNIPPET_CHARS = 300
#: Tokens left for the chat template around the counted message texts.
PROMPT_SLACK_TOKENS = 64
CANCELLED = "cancelled before the answer was complete"


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
    ) -> None:
        self._engine = engine
        self._store = store
        self._embedder = embedder
        self._recorder = recorder
        self._settings = settings
        self._reranker = reranker

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
    ) -> AsyncIterator[AnswerEvent]:
        """Stream ``delta`` events, then one ``done`` (or ``error``) event.

        Retrieval sees only what ``user`` (with ``groups``) of ``tenant`` may see,
        further narrowed by ``filters`` (sources, documents, types, tags, dates).

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
            self._recorder.start, question, tenant=tenant, conversation_id=conversation_id
        )
        run = _Run()
        sources: list[Source] = []
        try:
            caller = Caller(tenant=tenant, user=user, groups=tuple(groups))
            hits = await self._retrieve(
                question, top_k=k, filter=replace(filters or SearchFilter(), caller=caller,
                                                  tenant=None))
            run.retrieved = [
                {"chunk_id": h.chunk_id, "doc_id": h.doc_id, "score": float(h.score),
                 "rank": rank}
                for rank, h in enumerate(hits, start=1)
            ]
            hits = [h for h in hits if h.score >= self._settings.retrieval.min_score]
            # Near-duplicates out, overlapping chunks of a document merged into one source.
            hits = pack(hits)
            if not hits:
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

            prompt = self._build_prompt(question, hits)
            sources = [_source(n, h) for n, h in enumerate(prompt.hits, start=1)]
            run.prompt = [m.to_openai() for m in prompt.messages]
            run.model = self._engine.model_name
            run.phase = "generation"
            options = GenerationOptions(
                max_tokens=self._settings.llm.max_tokens,
                temperature=self._settings.llm.temperature,
            )
            stream = self._engine.generate(
                prompt.messages, options=options, request_id=handle.trace_id
            )
            async with aclosing(stream):
                async for event in stream:
                    if event.kind == "text" and event.text:
                        handle.mark_first_token()
                        run.parts.append(event.text)
                        yield AnswerEvent(type="delta", text=event.text)
                    elif event.kind == "finish":
                        run.usage = event.usage
                        run.finish_reason = event.finish_reason
                    else:
                        logger.warning("ignoring engine event", extra={"kind": event.kind})
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

        citations = resolve_citations(run.answer, sources)
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
        )

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
        parts: list[str] = []
        events = self.stream_answer(
            question, tenant=tenant, top_k=top_k, conversation_id=conversation_id, **retrieval
        )
        async with aclosing(events):
            async for event in events:
                if event.type == "delta":
                    parts.append(event.text or "")
                elif event.type == "error":
                    raise EngineError(event.message or "the answer failed")
                else:
                    return AnswerResult(
                        answer="".join(parts),
                        citations=event.citations or [],
                        sources=event.sources or [],
                        trace_id=event.trace_id,
                        usage=event.usage,
                        model=event.model,
                    )
        raise EngineError("the answer ended without a result")

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

    def _build_prompt(self, question: str, hits: list[SearchHit]) -> Prompt:
        llm = self._settings.llm
        budget = llm.max_model_len - llm.max_tokens - PROMPT_SLACK_TOKENS
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
