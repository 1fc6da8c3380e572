"""The in-process vLLM engine with the bundled Mistral-architecture model (CPU)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sirocco.errors import InvalidInputError
from sirocco.types import ChatMessage, GenerationOptions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

GREEDY = GenerationOptions(max_tokens=48, temperature=0.0)


async def _collect(engine, messages, options=GREEDY, **kwargs):
    return [ev async for ev in engine.generate(messages, options=options, **kwargs)]


async def test_streams_text_then_finish_with_usage(vllm_engine):
    events = await _collect(vllm_engine, [ChatMessage(role="user", content="What is 2+2?")])

    kinds = [ev.kind for ev in events]
    assert kinds[-1] == "finish"
    assert kinds.count("finish") == 1
    texts = [ev.text for ev in events if ev.kind == "text"]
    assert len(texts) > 1, "expected a stream of deltas, not one block"
    answer = "".join(texts)
    assert "4" in answer
    finish = events[-1]
    assert finish.finish_reason in {"stop", "length"}
    assert finish.usage is not None
    assert finish.usage.prompt_tokens > 5
    assert 0 < finish.usage.completion_tokens <= GREEDY.max_tokens
    # The chat template's end-of-turn token stops generation and is not text.
    assert "<|im_end|>" not in answer


async def test_max_tokens_gives_length_finish(vllm_engine):
    options = GenerationOptions(max_tokens=5, temperature=0.0)
    events = await _collect(
        vllm_engine, [ChatMessage(role="user", content="Tell me a long story.")], options
    )
    assert events[-1].finish_reason == "length"
    assert events[-1].usage.completion_tokens == 5


async def test_abort_mid_stream_then_engine_still_serves(vllm_engine):
    messages = [ChatMessage(role="user", content="Count from one to one hundred in words.")]
    options = GenerationOptions(max_tokens=400, temperature=0.0)
    deltas = 0
    async with contextlib.aclosing(
        vllm_engine.generate(messages, options=options, request_id="abort-me")
    ) as stream:
        async for ev in stream:
            assert ev.kind == "text"
            deltas += 1
            if deltas == 2:
                break
    assert deltas == 2
    # The engine forgot the request instead of generating 400 tokens for nobody.
    for _ in range(50):
        if vllm_engine.num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.05)
    assert vllm_engine.num_unfinished_requests() == 0

    events = await _collect(vllm_engine, [ChatMessage(role="user", content="Say hello.")])
    assert events[-1].kind == "finish"
    assert events[-1].usage.completion_tokens > 0


async def test_cancelled_task_aborts_request(vllm_engine):
    started = asyncio.Event()

    async def consume():
        async for _ in vllm_engine.generate(
            [ChatMessage(role="user", content="Write a long essay about rivers.")],
            options=GenerationOptions(max_tokens=400),
        ):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), timeout=120)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):
        if vllm_engine.num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.05)
    assert vllm_engine.num_unfinished_requests() == 0


async def test_concurrent_requests_are_independent(vllm_engine):
    prompts = ["What is 2+2?", "Name a colour.", "What is the capital of France?"]
    results = await asyncio.gather(
        *(_collect(vllm_engine, [ChatMessage(role="user", content=p)]) for p in prompts)
    )
    solo = await _collect(vllm_engine, [ChatMessage(role="user", content=prompts[2])])
    texts = ["".join(ev.text for ev in r if ev.kind == "text") for r in results]
    assert "Paris" in texts[2]
    # Greedy decoding: batching with other requests does not change the answer.
    assert texts[2] == "".join(ev.text for ev in solo if ev.kind == "text")


async def test_prompt_longer_than_context_is_refused(vllm_engine):
    long_text = "word " * 5000
    with pytest.raises(InvalidInputError, match="max_model_len"):
        await _collect(vllm_engine, [ChatMessage(role="user", content=long_text)])


def test_count_tokens(vllm_engine):
    assert vllm_engine.count_tokens("") == 0
    n = vllm_engine.count_tokens("Hello world, how are you today?")
    assert 5 <= n <= 12


def test_config_summary_reports_effective_config(vllm_engine, engine_settings, served_dtype):
    summary = vllm_engine.engine_config_summary()
    assert summary["architectures"] == ["MistralForCausalLM"]
    assert summary["served_model_name"] == engine_settings.llm.served_model_name
    assert summary["max_model_len"] == 2048
    assert summary["kv_cache_bytes"] == 1 << 30
    assert summary["kv_cache_blocks"] > 0
    # The dtype the prepare-time check found to give the reference answers here.
    assert summary["dtype"] == served_dtype
    assert summary["device"] == "cpu"
    assert vllm_engine.model_name == engine_settings.llm.served_model_name
