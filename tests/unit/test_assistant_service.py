"""Assistant.stream_answer with scripted doubles and an in-memory trace store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from sqlalchemy.orm import Session, sessionmaker

import ingest.models  # noqa: F401
from assistant.prompts import NOT_FOUND_ANSWER
from assistant.schemas import AnswerEvent
from assistant.service import Assistant
from sirocco.db import session_scope
from sirocco.errors import EngineError, InvalidInputError, UnavailableError
from sirocco.settings import Settings
from tests.answering import ask
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
from traces.models import Trace
from traces.recorder import TraceRecorder
from traces.repository import get_trace


@pytest.fixture
def settings() -> Settings:
    # The free format, no refusal threshold: those are tested in test_assistant_refusal.py.
    return Settings(env="test", retrieval={"top_k": 3, "min_score": 0.2},
                    llm={"max_tokens": 64, "temperature": 0.0, "answer_format": "free"},
                    assistant={"refusal_min_score": None})


def make_assistant(factory: sessionmaker[Session], settings: Settings, engine: ScriptedEngine,
                   store: StaticStore) -> Assistant:
    return Assistant(engine, store, ConstantEmbedder(), TraceRecorder(factory), settings)


async def collect(events: AsyncIterator[AnswerEvent]) -> list[AnswerEvent]:
    return [e async for e in events]


def load_trace(factory: sessionmaker[Session], trace_id: str | None) -> Trace:
    assert trace_id is not None
    with session_scope(factory) as session:
        return get_trace(session=session, trace_id=trace_id)


def only_trace(factory: sessionmaker[Session]) -> Trace:
    with session_scope(factory) as session:
        traces = session.query(Trace).all()
    assert len(traces) == 1, "every call records exactly one trace"
    return traces[0]


async def test_streams_deltas_then_done_with_mapped_citations(factory, settings) -> None:
    engine = ScriptedEngine(["Paris is the capital [2].", " It is big [1][7]."])
    store = StaticStore([make_hit(1, score=0.9), make_hit(2, score=0.8, page=4),
                         make_hit(3, score=0.7)])
    events = await collect(make_assistant(factory, settings, engine, store).stream_answer(*ask(
        "What is the capital?", tenant="acme", conversation_id="conv-1")))

    assert [e.type for e in events] == ["delta", "delta", "done"]
    assert [e.text for e in events[:2]] == ["Paris is the capital [2].", " It is big [1][7]."]
    done = events[-1]
    # [7] is outside the 3 sources: dropped. Order: first citation first.
    assert [(c.n, c.chunk_id, c.doc_id, c.inferred) for c in done.citations] == [
        (2, "chunk-2", "doc-2", False), (1, "chunk-1", "doc-1", False)]
    cited = done.citations[0]
    assert (cited.title, cited.source, cited.page, cited.score) == (
        "Title 2", "/docs/file2.pdf", 4, 0.8)
    assert (cited.start_char, cited.end_char) == (20, 20 + len(store.hits[1].text))
    assert cited.snippet == "Fact number 2 is written here."
    assert [s.n for s in done.sources] == [1, 2, 3]
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.total_tokens) == (
        42, 47)
    assert done.model == "scripted-model"
    [search] = store.searches
    assert (search["vector"], search["top_k"], search["tenant"]) == ([1.0, 0.0, 0.0, 0.0], 3,
                                                                      "acme")
    # Hybrid by default, with the question for BM25 and the caller's ACL in the filter.
    assert (search["mode"], search["text"]) == ("hybrid", "What is the capital?")
    assert search["filter"].caller.acl_entries() == ["*"]
    assert engine.options[0].max_tokens == 64

    trace = load_trace(factory, done.trace_id)
    assert trace.status == "ok" and trace.error is None
    assert trace.answer == "Paris is the capital [2]. It is big [1][7]."
    assert (trace.query, trace.tenant, trace.conversation_id) == (
        "What is the capital?", "acme", "conv-1")
    assert trace.retrieved == [
        {"chunk_id": "chunk-1", "doc_id": "doc-1", "score": 0.9, "rank": 1},
        {"chunk_id": "chunk-2", "doc_id": "doc-2", "score": 0.8, "rank": 2},
        {"chunk_id": "chunk-3", "doc_id": "doc-3", "score": 0.7, "rank": 3}]
    assert [c["n"] for c in trace.citations] == [2, 1]
    assert trace.prompt == [m.to_openai() for m in engine.calls[0]]
    assert (trace.model, trace.prompt_tokens, trace.completion_tokens) == (
        "scripted-model", 42, 5)
    assert trace.ttft_ms is not None and trace.latency_ms is not None


async def test_prompt_numbers_the_sources_with_title_and_text(factory, settings) -> None:
    engine = ScriptedEngine()
    store = StaticStore([make_hit(1), make_hit(2, title="Handbook")])
    await collect(make_assistant(factory, settings, engine, store).stream_answer(*ask("Q?")))
    system, user = engine.calls[0]
    assert system.role == "system" and "only from the numbered sources" in system.content
    assert "[1] or [2]" in system.content
    assert user.role == "user"
    assert "[1] Title 1\nFact number 1 is written here." in user.content
    assert "[2] Handbook\nFact number 2 is written here." in user.content
    assert user.content.endswith("Question: Q?")


async def test_uncited_answer_is_attributed_to_the_top_source(factory, settings) -> None:
    engine = ScriptedEngine(["No markers here, and [0] [4] [99] are not sources."])
    store = StaticStore([make_hit(1), make_hit(2), make_hit(3)])
    assistant = make_assistant(factory, settings, engine, store)
    events = await collect(assistant.stream_answer(*ask("q")))
    done = events[-1]
    assert [(c.n, c.inferred) for c in done.citations] == [(1, True)]
    assert [s.n for s in done.sources] == [1, 2, 3]
    with session_scope(factory) as session:
        trace = get_trace(session=session, trace_id=done.trace_id)
        assert trace.citations[0]["inferred"] is True
        # Sirocco's guess is no evidence: no chunk is recorded as cited.
        assert [(c.chunk_id, c.cited) for c in trace.chunks] == [
            ("chunk-1", False), ("chunk-2", False), ("chunk-3", False)]


@pytest.mark.parametrize("hits", [[], [make_hit(1, score=0.1), make_hit(2, score=0.19)]],
                         ids=["empty-store", "below-min-score"])
async def test_nothing_retrieved_answers_without_the_engine(factory, settings, hits) -> None:
    engine = ScriptedEngine()
    events = await collect(make_assistant(factory, settings, engine, StaticStore(hits))
                           .stream_answer(*ask("q")))
    assert engine.calls == []
    assert [(e.type, e.text) for e in events[:-1]] == [("delta", NOT_FOUND_ANSWER)]
    done = events[-1]
    assert (done.type, done.citations, done.sources) == ("done", [], [])
    trace = load_trace(factory, done.trace_id)
    # No model was asked; the trace still holds the conversation (the question),
    # so that exports see a user turn before the answer.
    assert (trace.status, trace.answer, trace.prompt) == (
        "ok", NOT_FOUND_ANSWER, [{"role": "user", "content": "q"}])
    assert [r["chunk_id"] for r in trace.retrieved] == [h.chunk_id for h in hits]


async def test_engine_error_mid_stream_ends_with_error_event(factory, settings) -> None:
    engine = ScriptedEngine(["Partial ", "answer", " never sent"], fail_at=2)
    events = await collect(make_assistant(factory, settings, engine, StaticStore([make_hit(1)]))
                           .stream_answer(*ask("q")))
    assert [e.type for e in events] == ["delta", "delta", "error"]
    error = events[-1]
    assert error.message == "the language model failed while generating the answer"
    assert error.code == "engine_error"
    trace = load_trace(factory, error.trace_id)
    assert (trace.status, trace.answer) == ("error", "Partial answer")
    assert trace.error == "RuntimeError: engine exploded"
    assert trace.model == "scripted-model" and trace.prompt != []
    assert engine.streams_closed == 1


async def test_domain_engine_error_keeps_its_message(factory, settings) -> None:
    engine = ScriptedEngine(["a", "b"], fail_at=1, error=EngineError("the model is overloaded"))
    events = await collect(make_assistant(factory, settings, engine, StaticStore([make_hit(1)]))
                           .stream_answer(*ask("q")))
    assert (events[-1].type, events[-1].message) == ("error", "the model is overloaded")


async def test_engine_error_before_any_output_is_raised(factory, settings) -> None:
    engine = ScriptedEngine(["never"], fail_at=0)
    assistant = make_assistant(factory, settings, engine, StaticStore([make_hit(1)]))
    with pytest.raises(EngineError, match="the language model failed while generating"):
        await collect(assistant.stream_answer(*ask("q")))
    trace = only_trace(factory)
    assert (trace.status, trace.answer, trace.error) == (
        "error", "", "RuntimeError: engine exploded")


async def test_search_failure_is_raised_as_unavailable(factory, settings) -> None:
    class DownStore(StaticStore):
        def search(self, vector, *, top_k, **kw):  # type: ignore[no-untyped-def]
            raise ConnectionError("qdrant refused")

    engine = ScriptedEngine()
    assistant = make_assistant(factory, settings, engine, DownStore())
    with pytest.raises(UnavailableError, match="searching the indexed documents failed"):
        await collect(assistant.stream_answer(*ask("q")))
    assert engine.calls == []
    trace = only_trace(factory)
    assert (trace.status, trace.error) == ("error", "ConnectionError: qdrant refused")


async def test_closing_the_stream_aborts_generation_and_keeps_the_trace(factory, settings) -> None:
    engine = ScriptedEngine([f"t{i} " for i in range(50)])
    assistant = make_assistant(factory, settings, engine, StaticStore([make_hit(1)]))
    events = assistant.stream_answer(*ask("q"))
    first = await anext(events)
    second = await anext(events)
    await events.aclose()
    assert (first.text, second.text) == ("t0 ", "t1 ")
    assert engine.streams_closed == 1 and engine.emitted == 2
    trace = only_trace(factory)
    assert (trace.status, trace.answer) == ("error", "t0 t1 ")
    assert trace.error == "cancelled before the answer was complete"


async def test_bad_input_is_refused_before_any_work(factory, settings) -> None:
    engine, store = ScriptedEngine(), StaticStore([make_hit(1)])
    assistant = make_assistant(factory, settings, engine, store)
    with pytest.raises(InvalidInputError, match="the question is empty"):
        await collect(assistant.stream_answer(*ask("   ")))
    with pytest.raises(InvalidInputError, match="top_k must be between 1 and 50, got 51"):
        await collect(assistant.stream_answer(*ask("q", top_k=51)))
    assert store.searches == []


async def test_answer_collects_the_stream(factory, settings) -> None:
    engine = ScriptedEngine(["It is ", "blue [1]."])
    assistant = make_assistant(factory, settings, engine, StaticStore([make_hit(1)]))
    result = await assistant.answer(*ask("colour?", top_k=1))
    assert result.answer == "It is blue [1]."
    assert [(c.n, c.inferred) for c in result.citations] == [(1, False)]
    assert load_trace(factory, result.trace_id).answer == "It is blue [1]."


async def test_answer_raises_when_generation_fails_midway(factory, settings) -> None:
    engine = ScriptedEngine(["It is ", "blue"], fail_at=1)
    assistant = make_assistant(factory, settings, engine, StaticStore([make_hit(1)]))
    with pytest.raises(EngineError, match="the language model failed while generating"):
        await assistant.answer(*ask("colour?"))
    assert only_trace(factory).answer == "It is "


async def test_a_reranker_rescores_more_candidates_down_to_top_k(factory, settings) -> None:
    class Reverse:
        def rerank(self, query, hits, top_k):  # type: ignore[no-untyped-def]
            return [replace(h, score=1.0 - i / 10) for i, h in
                    enumerate(list(reversed(hits))[:top_k])]

    wide = settings.model_copy(update={"retrieval": settings.retrieval.model_copy(
        update={"rerank_candidates": 6})})
    store = StaticStore([make_hit(n, score=1.0 - n / 10) for n in range(1, 7)])
    assistant = Assistant(ScriptedEngine(["ok"]), store, ConstantEmbedder(),
                          TraceRecorder(factory), wide, reranker=Reverse())
    done = (await collect(assistant.stream_answer(*ask("q", tenant="acme"))))[-1]
    assert store.searches[0]["top_k"] == 6  # candidates, not top_k
    assert [s.doc_id for s in done.sources] == ["doc-6", "doc-5", "doc-4"]
