"""The real in-process engine: forced tool calls executed through the registry,
vLLM's and Sirocco's metrics at /metrics, and 429s past max_inflight."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from api.app import create_app
from api.services import Services
from assistant.service import Assistant
from llm.admission import GenerationLimiter
from llm.tools import MAX_FORCED_CALLS, TOOL_CALL_ID, Tool, ToolRegistry
from sirocco.settings import Settings
from sirocco.types import ChatMessage, GenerationOptions
from tests.integration.stack import ingest_texts
from traces.recorder import TraceRecorder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "enum": ["Paris", "Lyon", "Nice"]},
                          "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "days"], "additionalProperties": False}


def weather_registry() -> ToolRegistry:
    reg = ToolRegistry()
    reg.register(Tool("get_weather", "The forecast for a French city.", WEATHER,
                      lambda city, days: {"city": city, "days": days, "sky": "sunny"}))
    reg.register(Tool("get_time", "The time in a city.",
                      {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}, lambda city: "12:00"))
    return reg


async def _events(engine, max_tokens=64, **kwargs):
    messages = [ChatMessage(role="user", content="What will the weather be in Paris?")]
    return [ev async for ev in engine.generate(
        messages, options=GenerationOptions(max_tokens=max_tokens, temperature=0.0), **kwargs)]


@pytest.mark.parametrize("tool_choice", [
    "required", {"type": "function", "function": {"name": "get_weather"}}])
async def test_forced_call_is_valid_and_runs_through_the_registry(vllm_engine, tool_choice):
    reg = weather_registry()
    # Room to spare: the bounded "required" array must end by itself (unbounded,
    # the tiny model repeated calls until max_tokens cut the JSON off).
    events = await _events(vllm_engine, max_tokens=400, tools=reg.specs(),
                           tool_choice=tool_choice)
    calls = [ev.tool_call for ev in events if ev.kind == "tool_call"]
    assert calls, f"no call in {events}"
    assert len(calls) <= MAX_FORCED_CALLS
    assert events[-1].kind == "finish" and events[-1].finish_reason == "tool_calls"
    assert not [ev for ev in events if ev.kind == "text"], "a forced call is not text"
    for call in calls:
        assert TOOL_CALL_ID.match(call.id)
        assert call.name in reg.names()
        if isinstance(tool_choice, dict):
            assert call.name == "get_weather"
        # Structured outputs made the tiny model's arguments schema-valid.
        result = await reg.execute(call)
        assert not result.is_error, result.content
        assert result.to_message().tool_call_id == call.id


async def test_tools_without_forcing_stream_text(vllm_engine):
    reg = weather_registry()
    events = await _events(vllm_engine, tools=reg.specs(), tool_choice="auto")
    assert [ev.kind for ev in events if ev.kind != "text"] == ["finish"]
    assert "".join(ev.text for ev in events if ev.kind == "text")


def _services(settings, engine, embedder, limiter) -> Services:  # type: ignore[no-untyped-def]
    # Retrieval is not under test here, but it is the real one: a document
    # ingested through the pipeline into Qdrant, the product's embedder.
    store, factory, _ = ingest_texts(settings, embedder, {
        "rivers.md": "# Rivers\n\nRivers carry water from the hills to the sea.\n"})
    assistant = Assistant(engine, store, embedder, TraceRecorder(factory), settings)
    return Services(session_factory=factory, assistant=assistant, celery_app=object(),
                    register_files=lambda paths, *, session, tenant="default": [],
                    enqueue_documents=lambda app, ids: None, engine=engine, store=store,
                    embedder=embedder, limiter=limiter)


def _value(body: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", body, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


async def test_metrics_and_backpressure_with_the_real_engine(vllm_engine, engine_settings,
                                                             real_embedder, tmp_path):
    # API keys are another test's subject: this app runs as the anonymous admin.
    settings = Settings(env="test", data_dir=tmp_path, llm=engine_settings.llm,
                        models_dir=engine_settings.models_path, auth={"enabled": False})
    limiter = GenerationLimiter(1, retry_after_s=2)
    app = create_app(settings, services=_services(settings, vllm_engine, real_embedder,
                                                  limiter))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        before = (await http.get("/metrics")).text
        ttft_before = _value(before, "vllm:time_to_first_token_seconds_count")

        first = asyncio.create_task(http.post("/api/chat", json={
            "question": "Write a long essay about rivers.", "stream": False}))
        # vLLM's scheduler gauges follow the engine's steps: poll until they show it.
        for _ in range(600):
            during = (await http.get("/metrics")).text
            if _value(during, "vllm:num_requests_running") == 1.0:
                break
            await asyncio.sleep(0.05)
        assert limiter.in_flight == 1 and not first.done()
        refused = await http.post("/api/chat", json={"question": "Me too?"})
        answered = await first
        after = (await http.get("/metrics")).text

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"
    assert refused.json()["error"]["code"] == "overloaded"
    assert answered.status_code == 200 and answered.json()["answer"]

    # vLLM's own metrics, from the engine that answered.
    assert _value(during, "vllm:num_requests_running") == 1.0
    assert _value(during, "sirocco_generations_in_flight") == 1.0
    assert _value(after, "vllm:num_requests_running") == 0.0
    assert _value(after, "vllm:num_requests_waiting") == 0.0
    assert _value(after, "vllm:time_to_first_token_seconds_count") > ttft_before
    assert _value(after, "vllm:inter_token_latency_seconds_count") > 0
    for name in ("vllm:kv_cache_usage_perc", "vllm:prefix_cache_queries_total",
                 "vllm:prefix_cache_hits_total"):
        _value(after, name)
    # Sirocco's.
    assert _value(after, "sirocco_generations_rejected_total") == 1.0
    assert _value(after, "sirocco_generations_in_flight") == 0.0
    assert 'route="/api/chat",status="429"} 1.0' in after
    assert json.dumps(answered.json()["answer"])
