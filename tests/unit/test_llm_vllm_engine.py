"""VLLMEngine's stream contract against a stand-in AsyncLLM (no engine start-up).

The real engine is covered in tests/integration/test_llm_engine.py; here the
edges that are hard to provoke there: errors, abort bookkeeping, tools.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support import need_module

need_module("vllm")

from llm.vllm_engine import VLLMEngine  # noqa: E402
from sirocco.errors import EngineError, InvalidInputError  # noqa: E402
from sirocco.types import ChatMessage, GenerationOptions  # noqa: E402

MSGS = [ChatMessage(role="user", content="hi")]


class FakeTokenizer:
    def __init__(self) -> None:
        self.template_kwargs: dict[str, Any] = {}

    def apply_chat_template(self, messages, **kwargs):
        self.template_kwargs = kwargs
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]


@dataclass
class FakeLLM:
    deltas: list[str]
    fail_after: int | None = None
    last_finish: str = "stop"
    max_model_len: int = 64
    aborted: list[str] = field(default_factory=list)
    seen_params: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tokenizer = FakeTokenizer()
        self.vllm_config = SimpleNamespace(
            model_config=SimpleNamespace(max_model_len=self.max_model_len)
        )

        async def render(prompts):
            return [{"type": "token", **prompts[0]}]

        self.renderer = SimpleNamespace(render_cmpl_async=render)

    def get_tokenizer(self):
        return self.tokenizer

    async def generate(self, prompt, params, request_id):
        self.seen_params.append(params)
        for i, text in enumerate(self.deltas):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("kernel exploded")
            last = i == len(self.deltas) - 1
            yield SimpleNamespace(
                finished=last,
                outputs=[
                    SimpleNamespace(
                        text=text, token_ids=[1], finish_reason=self.last_finish if last else None
                    )
                ],
            )
            await asyncio.sleep(0)

    async def abort(self, request_id):
        self.aborted.append(request_id)


def _engine(fake: FakeLLM) -> VLLMEngine:
    return VLLMEngine(fake, model_name="test")  # type: ignore[arg-type]


async def test_text_deltas_then_finish_with_usage():
    fake = FakeLLM(deltas=["Hel", "lo", ""])
    engine = _engine(fake)
    events = [ev async for ev in engine.generate(MSGS, options=GenerationOptions(max_tokens=8))]
    assert [(e.kind, e.text) for e in events[:-1]] == [("text", "Hel"), ("text", "lo")]
    finish = events[-1]
    assert finish.kind == "finish" and finish.finish_reason == "stop"
    assert finish.usage.completion_tokens == 3
    assert finish.usage.prompt_tokens == len("<user>hi<assistant>")
    params = fake.seen_params[0]
    assert params.output_kind.name == "DELTA"
    assert params.max_tokens == 8


async def test_closing_early_aborts_the_request():
    fake = FakeLLM(deltas=["a", "b", "c", "d"])
    engine = _engine(fake)
    async with contextlib.aclosing(
        engine.generate(MSGS, options=GenerationOptions(), request_id="r1")
    ) as stream:
        async for _ in stream:
            break
    assert fake.aborted == ["r1"]


async def test_cancelling_the_consumer_aborts_the_request():
    fake = FakeLLM(deltas=["a"] * 1000)
    engine = _engine(fake)
    got_one = asyncio.Event()

    async def consume():
        async for _ in engine.generate(MSGS, options=GenerationOptions(), request_id="r2"):
            got_one.set()

    task = asyncio.create_task(consume())
    await got_one.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.aborted == ["r2"]


async def test_vllm_failure_becomes_engine_error():
    engine = _engine(FakeLLM(deltas=["a", "b"], fail_after=1))
    with pytest.raises(EngineError, match="kernel exploded"):
        [ev async for ev in engine.generate(MSGS, options=GenerationOptions())]


async def test_tools_reach_the_chat_template():
    fake = FakeLLM(deltas=["x"])
    engine = _engine(fake)
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    [ev async for ev in engine.generate(MSGS, options=GenerationOptions(), tools=tools)]
    assert fake.tokenizer.template_kwargs["tools"] == tools
    assert fake.tokenizer.template_kwargs["add_generation_prompt"] is True


async def test_prompt_over_context_is_refused_before_vllm():
    fake = FakeLLM(deltas=["x"], max_model_len=10)
    engine = _engine(fake)
    with pytest.raises(InvalidInputError, match="max_model_len"):
        [ev async for ev in engine.generate(MSGS, options=GenerationOptions())]
    assert fake.seen_params == []


async def test_max_tokens_is_capped_by_remaining_context():
    fake = FakeLLM(deltas=["x"], max_model_len=30)
    engine = _engine(fake)
    [ev async for ev in engine.generate(MSGS, options=GenerationOptions(max_tokens=500))]
    assert fake.seen_params[0].max_tokens == 30 - len("<user>hi<assistant>")


# ------------------------------------------------------------------ tool calls

SEARCH = {"type": "function", "function": {"name": "search", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}


async def test_required_tool_choice_constrains_decoding_and_yields_a_call():
    from llm.tools import TOOL_CALL_ID

    fake = FakeLLM(deltas=['[{"name": "sea', 'rch", "parameters": {"query": "q"}}]'])
    engine = _engine(fake)
    events = [ev async for ev in engine.generate(
        MSGS, options=GenerationOptions(), tools=[SEARCH], tool_choice="required")]
    assert [e.kind for e in events] == ["tool_call", "finish"]
    call = events[0].tool_call
    assert (call.name, call.arguments) == ("search", '{"query": "q"}')
    assert TOOL_CALL_ID.match(call.id)
    assert events[-1].finish_reason == "tool_calls"
    so = fake.seen_params[0].structured_outputs
    assert so.json["type"] == "array"
    assert so.json["items"]["anyOf"][0]["properties"]["name"]["enum"] == ["search"]


async def test_a_forced_call_cut_off_by_max_tokens_is_an_error_not_answer_text():
    fake = FakeLLM(deltas=['[{"name": "search", "param'], last_finish="length")
    events = []
    with pytest.raises(InvalidInputError, match=r"did not fit in max_tokens=\d+; raise max_tokens"):
        async for ev in _engine(fake).generate(
                MSGS, options=GenerationOptions(), tools=[SEARCH], tool_choice="required"):
            events.append(ev)
    assert not [e for e in events if e.kind == "text"]


async def test_named_tool_choice_uses_the_tool_parameters_schema():
    fake = FakeLLM(deltas=['{"query": ', '"whales"}'])
    engine = _engine(fake)
    choice = {"type": "function", "function": {"name": "search"}}
    events = [ev async for ev in engine.generate(
        MSGS, options=GenerationOptions(), tools=[SEARCH], tool_choice=choice)]
    assert events[0].tool_call.arguments == '{"query": "whales"}'
    assert fake.seen_params[0].structured_outputs.json == SEARCH["function"]["parameters"]


async def test_no_tools_means_no_structured_outputs():
    fake = FakeLLM(deltas=["hi"])
    [ev async for ev in _engine(fake).generate(MSGS, options=GenerationOptions())]
    assert fake.seen_params[0].structured_outputs is None
    assert fake.seen_params[0].skip_special_tokens is True


async def test_a_text_pattern_and_the_penalties_reach_the_sampler():
    fake = FakeLLM(deltas=["[1] Hi."])
    options = GenerationOptions(regex=r"\[1\] Hi\.", repetition_penalty=1.1,
                                frequency_penalty=0.3)
    [ev async for ev in _engine(fake).generate(MSGS, options=options)]
    params = fake.seen_params[0]
    assert params.structured_outputs.regex == r"\[1\] Hi\."
    assert (params.repetition_penalty, params.frequency_penalty) == (1.1, 0.3)


async def test_native_parser_streams_text_then_the_call(tmp_path):
    import shutil
    from pathlib import Path

    import mistral_common
    from vllm.tokenizers.mistral import MistralTokenizer

    from llm.vllm_tools import NativeToolParser

    src = Path(mistral_common.__file__).parent / "data" / \
        "mistral_instruct_tokenizer_240323.model.v3"
    shutil.copy(src, tmp_path / "tokenizer.model.v3")
    tokenizer = MistralTokenizer.from_pretrained(str(tmp_path))
    fake = FakeLLM(deltas=["Let me ", "look. [TO", 'OL_CALLS][{"name": "search", ',
                           '"arguments": {"query": "whales"}}]'])
    engine = _engine(fake)
    engine._tool_parser = NativeToolParser("mistral", tokenizer)
    events = [ev async for ev in engine.generate(MSGS, options=GenerationOptions(),
                                                 tools=[SEARCH])]
    assert [(e.kind, e.text) for e in events if e.kind == "text"] == [
        ("text", "Let me "), ("text", "look. ")]
    calls = [e.tool_call for e in events if e.kind == "tool_call"]
    assert [(c.name, c.arguments) for c in calls] == [("search", '{"query": "whales"}')]
    assert events[-1].finish_reason == "tool_calls"
    assert fake.seen_params[0].skip_special_tokens is False
    assert fake.seen_params[0].structured_outputs is None
