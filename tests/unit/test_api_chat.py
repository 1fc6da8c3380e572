"""POST /api/chat: SSE framing, errors before/after the first byte, disconnects."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

import ingest.models  # noqa: F401
from api.app import create_app
from api.services import Services
from assistant.prompts import NOT_FOUND_ANSWER
from assistant.schemas import AnswerEvent
from assistant.service import Assistant
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.settings import Settings
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
from traces.models import Trace
from traces.recorder import TraceRecorder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # API keys are tested in test_api_auth.py; these routes run as the anonymous admin.
    return Settings(env="test", data_dir=tmp_path, auth={"enabled": False})


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def services_with(factory: sessionmaker[Session], settings: Settings, assistant: Any) -> Services:
    return Services(session_factory=factory, assistant=assistant, celery_app=object(),
                    register_files=lambda paths, *, session, tenant="default": [],
                    enqueue_documents=lambda app, ids: None)


def real_assistant(factory, settings, engine: ScriptedEngine, hits=None) -> Assistant:  # type: ignore[no-untyped-def]
    store = StaticStore([make_hit(1), make_hit(2)] if hits is None else hits)
    return Assistant(engine, store, ConstantEmbedder(), TraceRecorder(factory), settings)


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def frames(body: str) -> list[str]:
    assert body.endswith("\n\n"), "every SSE frame ends with a blank line"
    parts = body.split("\n\n")[:-1]
    assert all(p.startswith("data: ") for p in parts), parts
    return [p.removeprefix("data: ") for p in parts]


async def post_chat(app: Any, payload: dict[str, Any]) -> httpx.Response:
    async with client_for(app) as client:
        return await client.post("/api/chat", json=payload)


async def test_sse_frames_end_with_done(factory, settings) -> None:
    engine = ScriptedEngine(["Blue ", "whales [2]."])
    app = create_app(settings, services=services_with(
        factory, settings, real_assistant(factory, settings, engine)))
    response = await post_chat(app, {"question": "Which whales?", "conversation_id": "c9"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    data = frames(response.text)
    assert data[-1] == "[DONE]"
    events = [json.loads(d) for d in data[:-1]]
    assert [e["type"] for e in events] == ["delta", "delta", "done"]
    assert "".join(e["text"] for e in events[:2]) == "Blue whales [2]."
    done = events[-1]
    assert [c["chunk_id"] for c in done["citations"]] == ["chunk-2"]
    assert [s["n"] for s in done["sources"]] == [1, 2]
    assert done["sources"][0]["page"] is None  # nested keys are stable, even when null
    assert "text" not in done and "message" not in done
    assert done["usage"] == {"prompt_tokens": 42, "completion_tokens": 5, "total_tokens": 47}

    async with client_for(app) as client:
        trace = (await client.get(f"/api/traces/{done['trace_id']}")).json()
    assert (trace["query"], trace["answer"], trace["status"], trace["conversation_id"]) == (
        "Which whales?", "Blue whales [2].", "ok", "c9")


async def test_engine_error_after_first_byte_is_an_error_event(factory, settings) -> None:
    engine = ScriptedEngine(["Half ", "never"], fail_at=1)
    app = create_app(settings, services=services_with(
        factory, settings, real_assistant(factory, settings, engine)))
    response = await post_chat(app, {"question": "q"})
    assert response.status_code == 200
    data = frames(response.text)
    assert data[-1] == "[DONE]"
    events = [json.loads(d) for d in data[:-1]]
    assert [e["type"] for e in events] == ["delta", "error"]
    assert events[1]["message"] == "the language model failed while generating the answer"
    assert events[1]["code"] == "engine_error"


async def test_unexpected_failure_after_first_byte_is_an_opaque_error_event(
    factory, settings
) -> None:
    class BrokenAssistant:
        async def stream_answer(self, request: Any, principal: Any) -> AsyncIterator[AnswerEvent]:
            yield AnswerEvent(type="delta", text="ok so far")
            raise KeyError("secret internal detail")

    app = create_app(settings, services=services_with(factory, settings, BrokenAssistant()))
    response = await post_chat(app, {"question": "q"})
    data = frames(response.text)
    assert data[-1] == "[DONE]"
    assert json.loads(data[0]) == {"type": "delta", "text": "ok so far"}
    assert json.loads(data[1]) == {"type": "error", "message": "internal server error",
                                   "code": "internal_error"}
    assert "secret" not in response.text


async def test_engine_error_before_first_byte_is_a_502(factory, settings) -> None:
    engine = ScriptedEngine(["never"], fail_at=0)
    app = create_app(settings, services=services_with(
        factory, settings, real_assistant(factory, settings, engine)))
    response = await post_chat(app, {"question": "q"})
    assert response.status_code == 502
    assert response.json() == {"error": {
        "message": "the language model failed while generating the answer",
        "type": "EngineError", "code": "engine_error"}}


async def test_nothing_found_is_streamed_without_the_engine(factory, settings) -> None:
    engine = ScriptedEngine()
    app = create_app(settings, services=services_with(
        factory, settings, real_assistant(factory, settings, engine, hits=[])))
    events = [json.loads(d) for d in frames((await post_chat(app, {"question": "q"})).text)[:-1]]
    assert events[0] == {"type": "delta", "text": NOT_FOUND_ANSWER}
    assert (events[1]["type"], events[1]["citations"], events[1]["sources"]) == ("done", [], [])
    assert engine.calls == []


async def test_a_question_no_source_covers_is_refused_with_related_sources(
        factory, settings) -> None:
    settings = settings.model_copy(update={"assistant": settings.assistant.model_copy(
        update={"refusal_min_score": 0.95})})
    engine = ScriptedEngine(["Invented [1]."])
    app = create_app(settings, services=services_with(factory, settings, real_assistant(
        factory, settings, engine, hits=[make_hit(1, score=0.5, title="Travel policy")])))
    events = [json.loads(d) for d in frames((await post_chat(app, {"question": "q"})).text)[:-1]]
    assert events[0] == {"type": "delta",
                         "text": f"{NOT_FOUND_ANSWER} Related documents: Travel policy."}
    done = events[1]
    assert (done["type"], done["citations"], done["finish_reason"]) == ("done", [],
                                                                        "not_covered")
    assert [s["title"] for s in done["sources"]] == ["Travel policy"]
    assert engine.calls == []


async def test_stream_false_returns_one_json_body(factory, settings) -> None:
    engine = ScriptedEngine(["Green [1]."])
    app = create_app(settings, services=services_with(
        factory, settings, real_assistant(factory, settings, engine)))
    response = await post_chat(app, {"question": "colour?", "stream": False, "top_k": 1})
    assert response.status_code == 200
    body = response.json()
    assert body["answer"] == "Green [1]."
    assert [(c["n"], c["inferred"]) for c in body["citations"]] == [(1, False)]
    assert len(body["sources"]) == 1 and body["trace_id"]


async def test_invalid_body_gets_the_error_envelope(factory, settings) -> None:
    app = create_app(settings, services=services_with(
        factory, settings, real_assistant(factory, settings, ScriptedEngine())))
    response = await post_chat(app, {"question": "", "top_k": 0})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert "question: String should have at least 1 character" in error["message"]
    assert "top_k: Input should be greater than or equal to 1" in error["message"]


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
async def test_client_disconnect_cancels_generation(factory, settings, spec_version) -> None:
    engine = ScriptedEngine([f"t{i} " for i in range(200)], delay=0.01)
    app = create_app(settings, services=services_with(
        factory, settings, real_assistant(factory, settings, engine)))
    first_body = asyncio.Event()
    sent: list[bytes] = []
    request_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b'{"question": "q"}', "more_body": False}
        await first_body.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            sent.append(message["body"])
            first_body.set()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": spec_version},
             "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/api/chat",
             "raw_path": b"/api/chat", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    await asyncio.wait_for(app(scope, receive, send), timeout=10)

    assert engine.streams_closed == 1
    assert 1 <= engine.emitted < 200, "generation must stop soon after the disconnect"
    assert b"data: [DONE]\n\n" not in sent
    with session_scope(factory) as session:
        trace = session.query(Trace).one()
    assert (trace.status, trace.error) == ("error", "cancelled before the answer was complete")
    assert trace.answer.startswith("t0 ") and len(trace.answer.split()) == engine.emitted


async def test_chat_filters_reach_the_store_with_the_callers_tenant(factory, settings) -> None:
    assistant = real_assistant(factory, settings, ScriptedEngine(["ok [1]"]))
    app = create_app(settings, services=services_with(factory, settings, assistant))
    response = await post_chat(app, {
        "question": "leave policy?", "stream": False,
        "filters": {"tags": ["policy"], "mime_types": ["application/pdf"],
                    "modified_after": "2026-01-01T00:00:00Z"}})
    assert response.status_code == 200, response.text
    flt = assistant._store.searches[0]["filter"]
    assert (flt.tags, flt.mime_types) == (["policy"], ["application/pdf"])
    assert flt.modified_after == 1767225600.0 and flt.caller.tenant == "default"
    bad = await post_chat(app, {"question": "q", "filters": {"tenant": "globex"}})
    assert bad.status_code == 422 and "filters.tenant" in bad.json()["error"]["message"]
