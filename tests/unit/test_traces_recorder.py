"""TraceRecorder and the trace repository on in-memory SQLite."""

from __future__ import annotations

import logging
from datetime import UTC

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

import ingest.models  # noqa: F401
from sirocco.db import session_scope
from sirocco.errors import InvalidInputError, NotFoundError
from traces.models import Trace, TracePublic
from traces.recorder import TraceRecorder
from traces.repository import get_trace, list_traces


class FlakyFactory:
    """A session factory whose first ``failures`` calls fail like a lost database."""

    def __init__(self, inner: sessionmaker[Session], failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def __call__(self) -> Session:
        if self.failures:
            self.failures -= 1
            raise OperationalError("connect", {}, Exception("database is down"))
        return self.inner()


def _load(factory: sessionmaker[Session], trace_id: str) -> Trace:
    with session_scope(factory) as session:
        return get_trace(session=session, trace_id=trace_id)


def test_start_stores_a_running_trace(factory: sessionmaker[Session]) -> None:
    handle = TraceRecorder(factory).start("what?", tenant="acme", conversation_id="c1")
    trace = _load(factory, handle.trace_id)
    assert (trace.status, trace.query, trace.tenant, trace.conversation_id) == (
        "running", "what?", "acme", "c1")
    assert handle.persisted


def test_finish_stores_the_outcome(factory: sessionmaker[Session]) -> None:
    recorder = TraceRecorder(factory)
    handle = recorder.start("q")
    handle.mark_first_token()
    public = recorder.finish(
        handle, answer="A [1]", model="m", prompt_tokens=11, completion_tokens=2,
        retrieved=[{"chunk_id": "c", "doc_id": "d", "score": 0.5, "rank": 1}],
        prompt=[{"role": "user", "content": "q"}], citations=[{"n": 1}],
    )
    trace = _load(factory, handle.trace_id)
    assert isinstance(public, TracePublic) and public.id == handle.trace_id
    assert (trace.status, trace.answer, trace.model) == ("ok", "A [1]", "m")
    assert (trace.prompt_tokens, trace.completion_tokens) == (11, 2)
    assert trace.retrieved == [{"chunk_id": "c", "doc_id": "d", "score": 0.5, "rank": 1}]
    assert trace.citations == [{"n": 1}]
    assert trace.ttft_ms is not None and trace.latency_ms is not None
    assert trace.latency_ms >= trace.ttft_ms
    assert public.created_at.tzinfo == UTC


def test_only_model_written_citations_not_unsupported_mark_chunks_cited(
        factory: sessionmaker[Session]) -> None:
    recorder = TraceRecorder(factory)
    handle = recorder.start("q")
    citations = [
        {"n": 1, "chunk_id": "k1", "chunk_ids": ["k1"], "inferred": False, "supported": True},
        # Not checked (no chunk text), still the model's own: counts; a merged
        # source credits every chunk it stands for.
        {"n": 2, "chunk_id": "k2", "chunk_ids": ["k2", "k5"], "inferred": False,
         "supported": None},
        {"n": 3, "chunk_id": "k3", "chunk_ids": ["k3"], "inferred": True, "supported": None},
        {"n": 4, "chunk_id": "k4", "chunk_ids": ["k4"], "inferred": False, "supported": False},
    ]
    recorder.finish(handle, answer="A [1]. B [2]. C [4].", citations=citations,
                    retrieved=[{"chunk_id": f"k{i}", "doc_id": "d", "score": 0.5, "rank": i}
                               for i in range(1, 7)])
    with session_scope(factory) as session:
        trace = get_trace(session=session, trace_id=handle.trace_id)
        assert [(c.chunk_id, c.cited) for c in trace.chunks] == [
            ("k1", True), ("k2", True), ("k3", False), ("k4", False), ("k5", True),
            ("k6", False)]
        # The citations themselves are stored as they came, flags included.
        assert trace.citations == citations


def test_error_keeps_the_partial_answer(factory: sessionmaker[Session]) -> None:
    recorder = TraceRecorder(factory)
    handle = recorder.start("q")
    recorder.finish(handle, answer="half an ans", status="error", error="boom")
    trace = _load(factory, handle.trace_id)
    assert (trace.status, trace.answer, trace.error) == ("error", "half an ans", "boom")
    assert trace.ttft_ms is None


def test_only_the_first_finish_counts(factory: sessionmaker[Session]) -> None:
    recorder = TraceRecorder(factory)
    handle = recorder.start("q")
    recorder.finish(handle, answer="first", status="error", error="cancelled")
    assert recorder.finish(handle, answer="second") is None
    assert _load(factory, handle.trace_id).answer == "first"


def test_trace_is_kept_when_start_could_not_write(factory: sessionmaker[Session]) -> None:
    recorder = TraceRecorder(FlakyFactory(factory, failures=1))  # type: ignore[arg-type]
    handle = recorder.start("q")
    assert not handle.persisted
    recorder.finish(handle, answer="partial", status="error", error="engine died")
    trace = _load(factory, handle.trace_id)
    assert (trace.query, trace.answer, trace.status) == ("q", "partial", "error")


def test_storage_failure_is_logged_not_raised(
    factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    recorder = TraceRecorder(FlakyFactory(factory, failures=2))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="traces.recorder"):
        handle = recorder.start("q")
        assert recorder.finish(handle, answer="a") is None
    assert any(r.getMessage() == "trace not stored" and r.trace_id == handle.trace_id
               for r in caplog.records)


def test_finish_refuses_an_unknown_status(factory: sessionmaker[Session]) -> None:
    recorder = TraceRecorder(factory)
    with pytest.raises(ValueError, match="status must be 'ok' or 'error'"):
        recorder.finish(recorder.start("q"), status="done")


def test_get_trace_unknown_id(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session, pytest.raises(NotFoundError) as err:
        get_trace(session=session, trace_id="nope")
    assert err.value.message == "trace 'nope' not found"


def test_list_traces_newest_first_with_limit(factory: sessionmaker[Session]) -> None:
    recorder = TraceRecorder(factory)
    ids = [recorder.start(f"q{i}", tenant="t" if i != 1 else "other").trace_id for i in range(4)]
    with session_scope(factory) as session:
        newest = [t.id for t in list_traces(session=session, limit=2)]
        of_t = [t.query for t in list_traces(session=session, limit=10, tenant="t")]
        with pytest.raises(InvalidInputError, match="limit must be between 1 and 500"):
            list_traces(session=session, limit=0)
    assert newest == [ids[3], ids[2]]
    assert of_t == ["q3", "q2", "q0"]
