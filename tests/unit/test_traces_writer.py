"""The full trace record (spans, messages, tool calls, chunks, tool definitions)
and the background writer: off the request path, drained on close, spooled
and replayed when the database is down."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from assistant.service import Assistant
from sirocco.db import session_scope
from sirocco.settings import Settings
from tests.answering import ask
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
from traces.models import ToolDefinitionSet, Trace
from traces.recorder import TraceRecorder, hash_user
from traces.repository import get_trace

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


class DownFactory:
    """A session factory for a database that is down."""

    def __call__(self) -> Session:
        raise OperationalError("connect", {}, Exception("database is down"))


def _count(factory: sessionmaker[Session]) -> int:
    with session_scope(factory) as session:
        return session.scalar(select(func.count()).select_from(Trace)) or 0


def test_finish_stores_messages_tool_calls_chunks_spans_and_tools(factory) -> None:
    recorder = TraceRecorder(factory, user_salt="s")
    handle = recorder.start("weather in Nice?", tenant="acme", user="alice", consent=True)
    span = handle.start_span("retrieval", "retrieval.search", **{"gen_ai.request.top_k": 3})
    handle.end_span(span, **{"sirocco.retrieval.hits": 2})
    handle.start_span("llm", "chat m", **{"gen_ai.request.model": "m"})  # left open
    prompt = [{"role": "system", "content": "s"},
              {"role": "user", "content": "weather in Nice?"},
              {"role": "assistant", "content": "", "tool_calls": [
                  {"id": "abcDEF123", "type": "function",
                   "function": {"name": "get_weather", "arguments": '{"city": "Nice"}'}}]},
              {"role": "tool", "content": "sunny", "tool_call_id": "abcDEF123"}]
    recorder.finish(
        handle, answer="It is sunny [1].", prompt=prompt, model="m", prompt_tokens=10,
        completion_tokens=4, tools=TOOLS, finish_reason="stop",
        retrieved=[{"chunk_id": "k1", "doc_id": "d1", "score": 0.9, "rank": 1,
                    "text": "Nice is sunny", "in_prompt": True},
                   {"chunk_id": "k2", "doc_id": "d2", "score": 0.1, "rank": 2,
                    "text": "Paris", "in_prompt": False}],
        citations=[{"n": 1, "chunk_id": "k1", "chunk_ids": ["k1"]}],
        tool_calls=[{"id": "xyzXYZ789", "name": "get_weather", "arguments": "{}"}])
    with session_scope(factory) as session:
        trace = get_trace(session=session, trace_id=handle.trace_id)
        assert trace.user_hash == hash_user("alice", tenant="acme", salt="s")
        assert "alice" not in (trace.user_hash or "")
        assert (trace.consent, trace.total_tokens, trace.finish_reason) == (True, 14, "stop")
        assert trace.app_release
        assert [(m.role, m.is_output) for m in trace.messages] == [
            ("system", False), ("user", False), ("assistant", False), ("tool", False),
            ("assistant", True)]
        assert trace.messages[-1].content == "It is sunny [1]."
        assert trace.messages[-1].tool_calls[0]["id"] == "xyzXYZ789"
        assert [(c.call_id, c.result, c.status) for c in trace.tool_calls] == [
            ("abcDEF123", "sunny", "ok"), ("xyzXYZ789", None, "called")]
        assert [(c.rank, c.in_prompt, c.cited, c.text) for c in trace.chunks] == [
            (1, True, True, "Nice is sunny"), (2, False, False, "Paris")]
        spans = {s.kind: s for s in trace.spans}
        assert spans["retrieval"].attributes == {"gen_ai.request.top_k": 3,
                                                 "sirocco.retrieval.hits": 2}
        assert spans["retrieval"].status == "ok" and spans["retrieval"].duration_ms is not None
        assert spans["llm"].status == "error"  # never ended: closed as failed
        assert trace.tool_definitions is not None and trace.tool_definitions.tools == TOOLS
        assert session.scalar(select(func.count()).select_from(ToolDefinitionSet)) == 1


def test_same_tools_are_stored_once(factory) -> None:
    recorder = TraceRecorder(factory)
    for _ in range(3):
        recorder.finish(recorder.start("q"), answer="a", tools=TOOLS)
    with session_scope(factory) as session:
        assert session.scalar(select(func.count()).select_from(ToolDefinitionSet)) == 1


def test_background_writes_every_trace_under_concurrency_and_drains_on_close(factory) -> None:
    recorder = TraceRecorder(factory, background=True)
    n_threads, per_thread = 8, 25

    def chat(i: int) -> None:
        for j in range(per_thread):
            handle = recorder.start(f"q{i}-{j}")
            recorder.finish(handle, answer="a", status="ok" if j % 3 else "error",
                            error=None if j % 3 else "boom")

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recorder.close()  # a normal shutdown: what is queued is written
    assert _count(factory) == n_threads * per_thread
    with session_scope(factory) as session:
        statuses = set(session.scalars(select(Trace.status)))
    assert statuses == {"ok", "error"}


def test_database_down_spools_and_the_next_writer_replays(factory, tmp_path: Path) -> None:
    down = TraceRecorder(DownFactory(), background=True, spool_dir=tmp_path)  # type: ignore[arg-type]
    down._writer._delays = (0.0,)  # type: ignore[union-attr]  # no waiting in a unit test
    handle = down.start("lost?")
    down.finish(handle, answer="partial", status="error", error="engine died")
    down.close()
    assert (tmp_path / "traces-spool.jsonl").exists()
    assert _count(factory) == 0

    TraceRecorder(factory, background=True, spool_dir=tmp_path).close()
    with session_scope(factory) as session:
        trace = get_trace(session=session, trace_id=handle.trace_id)
        assert (trace.status, trace.answer, trace.error) == ("error", "partial", "engine died")
    assert not (tmp_path / "traces-spool.jsonl").exists()


async def test_engine_failure_mid_answer_keeps_spans_and_partial_output(factory) -> None:
    settings = Settings(env="test", retrieval={"top_k": 3, "min_score": 0.0})
    engine = ScriptedEngine(["Half ", "an answer", "never"], fail_at=2)
    assistant = Assistant(engine, StaticStore([make_hit(1, score=0.9)]), ConstantEmbedder(),
                          TraceRecorder(factory), settings)
    events = [e async for e in assistant.stream_answer(*ask("q?", user="bob"))]
    assert events[-1].type == "error"
    with session_scope(factory) as session:
        trace = session.scalars(select(Trace)).one()
        assert (trace.status, trace.answer) == ("error", "Half an answer")
        assert "engine exploded" in (trace.error or "")
        assert trace.prompt_template.startswith("rag-answer") and trace.prompt_template_version
        assert trace.messages[-1].is_output and trace.messages[-1].content == "Half an answer"
        kinds = {s.kind: s.status for s in trace.spans}
        assert kinds == {"retrieval": "ok", "llm": "error"}
        assert [c.in_prompt for c in trace.chunks] == [True]
