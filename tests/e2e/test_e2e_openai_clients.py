"""Real clients against the running server: the official ``openai`` client
(streaming with usage, non-streaming, errors) and LangChain's ``ChatOpenAI``
(plain and with ``bind_tools``); API keys made and revoked with the CLI; a
server-side ``search_documents`` round trip seen in the response and the trace."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

if TYPE_CHECKING:
    from tests.e2e.conftest import Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

QUESTION = "What is the Zephyr project code?"
MODEL = "sirocco"


@pytest.fixture(scope="module")
def ana_key(server: Server) -> str:
    """A user of group eng: may see zephyr.md and travel.md, not board.md."""
    return server.new_key("--user", "ana", "--groups", "eng")


def oai(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, timeout=600,
                         max_retries=0)


def test_openai_client_streams_an_answer_citing_the_document(server: Server,
                                                              ana_key: str) -> None:
    client = oai(server, ana_key)
    assert [m.id for m in client.models.list()] == [MODEL]
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], stream=True,
        stream_options={"include_usage": True}, temperature=0, max_tokens=64)
    parts: list[str] = []
    extra: dict[str, Any] | None = None
    finish = usage = None
    for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
            extra = (chunk.model_extra or {}).get("sirocco") or extra
        usage = chunk.usage or usage
    answer = "".join(parts)
    assert answer.strip()
    assert finish in ("stop", "length")
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert extra is not None, "the final chunk carries the sources"
    # The bundled 135M model rarely writes [n]; this test accepts an inferred
    # citation (Sirocco's attribution to its top source, never checked, so
    # supported null, left out of the JSON); one the model wrote is checked.
    top = extra["citations"][0]
    assert top["doc_id"] == server.docs["zephyr.md"]
    if top["inferred"]:
        assert top.get("supported") is None, top
    else:
        assert isinstance(top["supported"], bool), top
    assert top["source"].endswith("zephyr.md") and not top["source"].startswith("/")
    assert "ZX-4471" in top["snippet"]
    assert server.docs["board.md"] not in {s["doc_id"] for s in extra["sources"]}


def test_openai_client_non_streaming_and_errors(server: Server, ana_key: str) -> None:
    client = oai(server, ana_key)
    done = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=32)
    assert done.choices[0].message.content
    assert done.usage is not None and done.usage.total_tokens == (
        done.usage.prompt_tokens + done.usage.completion_tokens)
    sirocco = done.model_extra["sirocco"]  # type: ignore[index]
    assert sirocco["sources"][0]["doc_id"] == server.docs["zephyr.md"]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user",
                                                                  "content": "hi"}])
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "q"}],
                                       tools=[{"type": "function", "function": {
                                           "name": "f", "parameters": {"type": "array"}}}])
    assert bad.value.body["param"] == "tools[0].function.parameters"  # type: ignore[index]


def test_no_key_and_revoked_key_are_401(server: Server) -> None:
    r = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=30,
                   json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{server.base_url}/healthz", timeout=30).status_code == 200

    key = server.new_key("--user", "temp")
    client = oai(server, key)
    assert [m.id for m in client.models.list()] == [MODEL]
    listed = server.cli("keys", "list")
    row = next(line for line in listed.stdout.splitlines() if "\ttemp\t" in line)
    assert key not in listed.stdout
    assert server.cli("keys", "revoke", row.split("\t")[0]).returncode == 0
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_langchain_chat_openai_gets_an_answer(server: Server, ana_key: str) -> None:
    from langchain_core.messages import AIMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{server.base_url}/v1", api_key=ana_key, model=MODEL,
                     temperature=0, max_tokens=48, timeout=600, max_retries=0)
    reply = llm.invoke(QUESTION)
    assert isinstance(reply, AIMessage) and str(reply.content).strip()
    assert reply.usage_metadata and reply.usage_metadata["output_tokens"] > 0
    streamed = "".join(str(c.content) for c in llm.stream(QUESTION))
    assert streamed.strip()


def test_langchain_bind_tools_round_trip(server: Server, ana_key: str) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def lookup_timesheet_code(project: str) -> str:
        """The timesheet code of a project."""
        return "ZX-4471" if "zephyr" in project.lower() else "unknown"

    llm = ChatOpenAI(base_url=f"{server.base_url}/v1", api_key=ana_key, model=MODEL,
                     temperature=0, max_tokens=128, timeout=600, max_retries=0)
    # "auto": the bundled 135M model may answer or call; either way the server
    # accepted LangChain's tool schema, and any call names the offered tool.
    reply = llm.bind_tools([lookup_timesheet_code]).invoke(QUESTION)
    assert isinstance(reply, AIMessage)
    assert str(reply.content).strip() or reply.tool_calls
    assert all(c["name"] == "lookup_timesheet_code" for c in reply.tool_calls)

    # Forced: the engine must call the tool; its result goes back, the model answers.
    forced = llm.bind_tools([lookup_timesheet_code], tool_choice="lookup_timesheet_code")
    reply = forced.invoke(QUESTION)
    assert reply.tool_calls, reply
    call = reply.tool_calls[0]
    assert call["name"] == "lookup_timesheet_code" and isinstance(call["args"], dict)
    result = ToolMessage(str(lookup_timesheet_code.invoke(call["args"])),
                         tool_call_id=call["id"])
    final = llm.bind_tools([lookup_timesheet_code]).invoke(
        [HumanMessage(QUESTION), reply, result])
    assert isinstance(final, AIMessage)
    assert str(final.content).strip() or final.tool_calls


def test_search_documents_tool_round_trip_in_the_response_and_the_trace(
        server: Server, ana_key: str) -> None:
    headers = {"Authorization": f"Bearer {ana_key}"}
    # Forced (structured outputs); the server's max_tokens (256) leaves room for the JSON.
    r = httpx.post(f"{server.base_url}/api/chat", headers=headers, timeout=600, json={
        "question": QUESTION, "stream": False,
        "tools": ["search_documents"], "tool_choice": "search_documents"})
    assert r.status_code == 200, r.text
    body = r.json()
    [result] = body["tool_results"]
    assert result["name"] == "search_documents" and result["is_error"] is False
    found = json.loads(result["content"])["results"]
    # The tool ran with ana's permissions: the board's minutes stay hidden.
    assert all("BRD-9911" not in item["text"] for item in found)

    trace = httpx.get(f"{server.base_url}/api/traces/{body['trace_id']}", headers=headers,
                      timeout=60)
    assert trace.status_code == 200, trace.text
    detail = trace.json()
    assert [c["name"] for c in detail["tool_calls"]] == ["search_documents"]
    assert detail["tool_calls"][0]["call_id"] == result["id"]
    assert detail["tool_calls"][0]["status"] == "ok"
    assert [s["name"] for s in detail["spans"] if s["kind"] == "tool"] == [
        "execute_tool search_documents"]
