"""RemoteEngine's translation of an OpenAI-compatible stream (server stand-in:
httpx.MockTransport). The real server is in tests/integration/test_llm_remote_engine_server.py."""

from __future__ import annotations

import json

import httpx
import pytest

from llm.remote_engine import RemoteEngine
from llm.tools import TOOL_CALL_ID
from sirocco.errors import InvalidInputError, UnavailableError
from sirocco.types import ChatMessage, GenerationOptions

MSGS = [ChatMessage(role="user", content="hi")]


def sse(*chunks: dict) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def engine_with(handler) -> RemoteEngine:  # type: ignore[no-untyped-def]
    return RemoteEngine("http://llm/v1", model="m", api_key="k",
                        transport=httpx.MockTransport(handler))


async def test_text_tool_call_fragments_usage_and_request_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=sse(
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
            {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
            {"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "chatcmpl-tool-abc", "type": "function",
                 "function": {"name": "search", "arguments": '{"query": '}}]}}]},
            {"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": '"whales"}'}}]},
                "finish_reason": "tool_calls"}]},
            {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 5,
                                      "total_tokens": 12}},
        ), headers={"content-type": "text/event-stream"})

    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    events = [ev async for ev in engine_with(handler).generate(
        MSGS, options=GenerationOptions(max_tokens=9), tools=tools, tool_choice="required",
        request_id="r1")]
    assert [(e.kind, e.text) for e in events[:2]] == [("text", "Hel"), ("text", "lo")]
    call = events[2].tool_call
    assert (call.name, call.arguments) == ("search", '{"query": "whales"}')
    assert TOOL_CALL_ID.match(call.id), "server ids are re-drawn to Mistral's rule"
    assert (events[3].finish_reason, events[3].usage.prompt_tokens,
            events[3].usage.completion_tokens) == ("tool_calls", 7, 5)
    request = seen[0]
    assert request.url == "http://llm/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer k"
    body = json.loads(request.content)
    assert (body["stream"], body["stream_options"], body["tool_choice"], body["max_tokens"]) \
        == (True, {"include_usage": True}, "required", 9)
    assert "guided_json" not in body


@pytest.mark.parametrize(("status", "error"), [(400, InvalidInputError),
                                               (503, UnavailableError)])
async def test_http_errors_become_domain_errors(status, error) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"message": "nope nope"}})

    with pytest.raises(error, match=f"answered {status}: nope nope"):
        [ev async for ev in engine_with(handler).generate(MSGS, options=GenerationOptions())]


async def test_unreachable_server_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(UnavailableError, match="cannot reach the LLM server"):
        [ev async for ev in engine_with(handler).generate(MSGS, options=GenerationOptions())]


def test_token_count_falls_back_to_an_estimate() -> None:
    engine = RemoteEngine("http://llm/v1", model="m", tokenizer_path=None)
    assert engine.count_tokens("12345678") == 2


async def test_the_text_pattern_and_penalties_go_as_a_vllm_server_reads_them() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=sse(
            {"choices": [{"index": 0, "delta": {"content": "[1] Hi."},
                          "finish_reason": "stop"}]},
        ), headers={"content-type": "text/event-stream"})

    options = GenerationOptions(regex=r"\[1\] Hi\.", repetition_penalty=1.1,
                                frequency_penalty=0.3)
    [ev async for ev in engine_with(handler).generate(MSGS, options=options)]
    body = json.loads(seen[0].content)
    assert body["structured_outputs"] == {"regex": r"\[1\] Hi\."}
    assert (body["repetition_penalty"], body["frequency_penalty"]) == (1.1, 0.3)
    [ev async for ev in engine_with(handler).generate(MSGS, options=GenerationOptions())]
    plain = json.loads(seen[1].content)
    assert not {"structured_outputs", "repetition_penalty", "frequency_penalty"} & set(plain)
