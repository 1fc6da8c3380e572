"""The OpenAI-compatible API over the assistant, with doubles for the ports:
wire shapes (completion, chunks, usage), sources in the ``sirocco`` field,
history and tools passthrough, and every bad input as a 4xx in OpenAI's envelope.
The official ``openai`` client drives it too (over ASGI)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.services import Services
from assistant.prompts import NOT_FOUND_ANSWER
from assistant.service import Assistant
from sirocco.auth.keys import create_key
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.settings import Settings
from sirocco.types import ChatMessage, EngineEvent, GenerationOptions, ToolCall, Usage
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
from traces.recorder import TraceRecorder

MODEL = "scripted-model"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


class ToolEngine(ScriptedEngine):
    """Calls ``get_weather`` once, then finishes with reason "tool_calls"."""

    def __init__(self) -> None:
        super().__init__([])
        self.tools: list[Any] = []
        self.choices: list[Any] = []

    async def generate(self, messages: Sequence[ChatMessage], *, options: GenerationOptions,
                       tools: Sequence[dict[str, Any]] | None = None,
                       tool_choice: Any = None,
                       request_id: str | None = None) -> AsyncIterator[EngineEvent]:
        self.calls.append(list(messages))
        self.tools.append(tools)
        self.choices.append(tool_choice)
        yield EngineEvent(kind="tool_call", tool_call=ToolCall(
            id="call_1", name="get_weather", arguments='{"city": "Paris"}'))
        yield EngineEvent(kind="finish", finish_reason="tool_calls",
                          usage=Usage(prompt_tokens=30, completion_tokens=9))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(env="test", data_dir=tmp_path,
                    api={"max_question_chars": 200, "max_history_messages": 4, "max_tools": 2})


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def api_key(factory) -> str:
    with session_scope(factory) as s:
        return create_key(session=s, user="ana", groups=["hr"], tenant="acme")[1]


def make_app(settings, factory, engine=None, store=None):  # type: ignore[no-untyped-def]
    engine = engine or ScriptedEngine(["Blue ", "whales [2]."])
    store = store if store is not None else StaticStore([make_hit(1), make_hit(2)])
    assistant = Assistant(engine, store, ConstantEmbedder(), TraceRecorder(factory), settings)
    services = Services(session_factory=factory, assistant=assistant, celery_app=object(),
                        register_files=lambda paths, *, session, tenant="default": [],
                        enqueue_documents=lambda app, ids: None, engine=engine, store=store)
    return create_app(settings, services=services)


def client(app: Any, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                             headers={"Authorization": f"Bearer {key}"})


def ask(text: str = "Which whales?", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


async def post(app: Any, key: str, body: Any) -> httpx.Response:
    async with client(app, key) as c:
        if isinstance(body, str | bytes):
            return await c.post("/v1/chat/completions", content=body,
                                headers={"content-type": "application/json"})
        return await c.post("/v1/chat/completions", json=body)


def chunks(body: str) -> list[Any]:
    frames = [f.removeprefix("data: ") for f in body.split("\n\n") if f]
    assert frames[-1] == "[DONE]"
    return [json.loads(f) for f in frames[:-1]]


async def test_models_lists_the_served_model(settings, factory, api_key) -> None:
    async with client(make_app(settings, factory), api_key) as c:
        body = (await c.get("/v1/models")).json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"]) for m in body["data"]] == [(MODEL, "model")]


async def test_completion_has_usage_and_sources(settings, factory, api_key) -> None:
    store = StaticStore([make_hit(1), make_hit(2)])
    r = await post(make_app(settings, factory, store=store), api_key, ask())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Blue whales [2].",
                                             "tool_calls": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 42, "completion_tokens": 5, "total_tokens": 47}
    assert [s["doc_id"] for s in body["sirocco"]["sources"]] == ["doc-1", "doc-2"]
    assert [c["doc_id"] for c in body["sirocco"]["citations"]] == ["doc-2"]
    assert body["sirocco"]["trace_id"]
    caller = store.searches[0]["filter"].caller
    assert (caller.tenant, caller.user, caller.groups) == ("acme", "ana", ("hr",))


async def test_a_refusal_is_a_normal_completion_with_related_sources(
        settings, factory, api_key) -> None:
    settings = settings.model_copy(update={"assistant": settings.assistant.model_copy(
        update={"refusal_min_score": 0.95})})
    engine = ScriptedEngine(["Invented [1]."])
    store = StaticStore([make_hit(1, score=0.5, title="Travel policy")])
    r = await post(make_app(settings, factory, engine=engine, store=store), api_key, ask())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == (
        f"{NOT_FOUND_ANSWER} Related documents: Travel policy.")
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["sirocco"]["citations"] == []
    assert [s["title"] for s in body["sirocco"]["sources"]] == ["Travel policy"]
    assert engine.calls == []


async def test_stream_with_usage_chunk(settings, factory, api_key) -> None:
    r = await post(make_app(settings, factory), api_key,
                   ask(stream=True, stream_options={"include_usage": True}))
    assert r.headers["content-type"].startswith("text/event-stream")
    data = chunks(r.text)
    assert all(c["object"] == "chat.completion.chunk" for c in data)
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in data if c["choices"])
    assert text == "Blue whales [2]."
    final = data[-2]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert [c["doc_id"] for c in final["sirocco"]["citations"]] == ["doc-2"]
    assert data[-1]["choices"] == []
    assert data[-1]["usage"] == {"prompt_tokens": 42, "completion_tokens": 5, "total_tokens": 47}
    assert len({c["id"] for c in data}) == 1


async def test_history_and_client_system_reach_the_model(settings, factory, api_key) -> None:
    engine = ScriptedEngine(["ok"])
    body = {"model": MODEL, "messages": [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "Which whales?"}]}]}
    r = await post(make_app(settings, factory, engine=engine), api_key, body)
    assert r.status_code == 200, r.text
    # calls[0] rewrote the follow-up into a standalone query; then the answer.
    assert len(engine.calls) == 2
    sent = engine.calls[-1]
    assert [m.role for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[0].content.endswith("Answer in French.")
    assert (sent[1].content, sent[2].content) == ("Hi", "Hello")
    assert "Sources:" in sent[3].content and sent[3].content.endswith("Which whales?")


async def test_rag_off_sends_the_plain_conversation(settings, factory, api_key) -> None:
    engine, store = ScriptedEngine(["hi"]), StaticStore([make_hit(1)])
    r = await post(make_app(settings, factory, engine=engine, store=store), api_key,
                   ask("Hello", sirocco={"rag": False}))
    assert r.status_code == 200
    assert store.searches == []
    assert [(m.role, m.content) for m in engine.calls[0]] == [("user", "Hello")]
    assert r.json()["sirocco"]["sources"] == []


async def test_tools_pass_through_and_calls_come_back(settings, factory, api_key) -> None:
    engine = ToolEngine()
    app = make_app(settings, factory, engine=engine)
    r = await post(app, api_key, ask("Weather in Paris?", tools=[WEATHER]))
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert engine.tools[0] == [WEATHER] and engine.choices[0] is None

    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", named):
        r = await post(app, api_key, ask("Weather?", tools=[WEATHER], tool_choice=choice))
        assert r.status_code == 200 and engine.choices[-1] == choice

    r = await post(app, api_key, ask("Weather in Paris?", tools=[WEATHER], stream=True))
    data = chunks(r.text)
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in data
             if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]
    assert calls == [[{"index": 0, "id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]]
    assert data[-1]["choices"][0]["finish_reason"] == "tool_calls"

    # The round trip: the tool result comes back after the call, in order.
    r = await post(app, api_key, {"model": MODEL, "tools": [WEATHER], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}]})
    assert r.status_code == 200, r.text
    sent = engine.calls[-1]
    assert [m.role for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[2].tool_calls[0].name == "get_weather" and sent[3].content == "18 C, sunny"


async def test_tool_choice_none_sends_no_tools(settings, factory, api_key) -> None:
    engine = ScriptedEngine(["ok"])
    tools: list[Any] = []
    orig = engine.generate

    def spy(messages, *, options, tools_=None, **kw):  # type: ignore[no-untyped-def]
        tools.append(kw.get("tools"))
        return orig(messages, options=options, **kw)

    engine.generate = spy  # type: ignore[method-assign]
    r = await post(make_app(settings, factory, engine=engine), api_key,
                   ask(tools=[WEATHER], tool_choice="none"))
    assert r.status_code == 200 and tools == [None]


BAD = [
    ("{not json", 400, None, "JSON"),
    (ask(model="gpt-4"), 404, "model", "does not exist"),
    (ask("x" * 201), 400, "messages[0].content", "limit is 200"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "a"},
                                   {"role": "assistant", "content": "b"}] * 3},
     400, "messages", "after the last user message"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "a"}] * 6},
     400, "messages", "at most 4"),
    (ask(tools=[WEATHER] * 3), 400, "tools", "at most 2"),
    (ask(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": 12}}}}}]),
     400, "tools[0].function.parameters", "invalid JSON Schema"),
    (ask(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "array"}}}]), 400, "tools[0].function.parameters", "type object"),
    (ask(tools=[{"type": "function", "function": {"name": "bad name!"}}]), 400,
     "tools.0.function.name", "pattern"),
    (ask(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}), 400,
     "tool_choice", "unknown tool"),
    (ask(tools=[WEATHER], tool_choice={"type": "function", "function": "get_weather"}), 400,
     "tool_choice", "unknown tool"),
    (ask(seed=2**64), 400, "seed", "less than"),
    (ask(temperature=3), 400, "temperature", "less than or equal"),
    (ask(stop=["a", "b", "c", "d", "e"]), 400, "stop", "at most 4"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "a"},
                                   {"role": "tool", "content": "r"}]}, 400,
     "messages[1].tool_call_id", "tool_call_id"),
    (ask("   "), 400, "messages[0].content", "empty"),
    ({"model": MODEL, "messages": [{"role": "system", "content": "a"}]}, 400, "messages",
     "user message"),
    ({"model": MODEL, "messages": []}, 400, "messages", "at least 1"),
    (ask(n=2), 400, "n", "n=1"),
    ({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]}, 400,
     "messages[0].content[0]", "only text"),
    ([1, 2], 400, None, "valid dictionary"),
]


@pytest.mark.parametrize(("body", "status", "param", "message"), BAD)
async def test_bad_input_is_a_4xx_in_the_openai_envelope(settings, factory, api_key, body,
                                                         status, param, message) -> None:
    r = await post(make_app(settings, factory), api_key, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert error["param"] == param
    assert message in error["message"]


async def test_engine_failure_midstream_is_an_error_object(settings, factory, api_key) -> None:
    engine = ScriptedEngine(["Half ", "never"], fail_at=1)
    r = await post(make_app(settings, factory, engine=engine), api_key, ask(stream=True))
    data = chunks(r.text)
    assert data[-1] == {"error": {"message": "the language model failed while generating "
                                  "the answer", "type": "server_error", "param": None,
                                  "code": "engine_error"}}


async def test_the_official_openai_client_works_unchanged(settings, factory, api_key) -> None:
    app = make_app(settings, factory)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    oai = openai.AsyncOpenAI(base_url="http://test/v1", api_key=api_key, http_client=http)
    async with http:
        stream = await oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Which whales?"}], stream=True,
            stream_options={"include_usage": True})
        parts, extra, usage = [], None, None
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
                extra = (chunk.model_extra or {}).get("sirocco") or extra
            usage = chunk.usage or usage
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            await oai.chat.completions.create(model="gpt-4", messages=[
                {"role": "user", "content": "x"}])
        bad = openai.AsyncOpenAI(base_url="http://test/v1", api_key="sk-sirocco-wrongwrong",
                                 http_client=http)
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
    assert "".join(parts) == "Blue whales [2]."
    assert extra is not None and extra["citations"][0]["doc_id"] == "doc-2"
    assert usage is not None and usage.total_tokens == 47


async def test_consent_travels_in_the_sirocco_field(settings, factory, api_key) -> None:
    from traces.models import Trace

    app = make_app(settings, factory)
    given = (await post(app, api_key, ask(sirocco={"consent": True}))).json()
    unset = (await post(app, api_key, ask())).json()
    with session_scope(factory) as s:
        consent = {t.id: t.consent for t in s.query(Trace).all()}
    assert consent[given["sirocco"]["trace_id"]] is True
    assert consent[unset["sirocco"]["trace_id"]] is False
