"""Engine smoke benchmark: vLLM (in-process, CPU) vs Hugging Face ``generate``.

Measures, for the bundled model:
  1. engine start seconds (``VLLMEngine.start``),
  2. output tokens/s for N concurrent chat requests through the ``Engine`` API,
  3. the same workload with transformers ``generate`` (one padded batch, same
     checkpoint, in the dtype the engine serves) as the peer, and the ratio.

Greedy decoding, at most ``--max-tokens`` new tokens; both sides stop at the
end-of-turn token, so tokens/s uses the tokens each side actually produced.

    .venv/bin/python bench/engine_smoke.py --model mistral --n 8 --max-tokens 128
    .venv/bin/python bench/engine_smoke.py --dtype bfloat16    # the same in bf16
    .venv/bin/python bench/engine_smoke.py --quick             # smoke check
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from pathlib import Path

from llm.models import prepare_models
from llm.precision import resolve_dtype
from sirocco.settings import LLMSettings, Settings
from sirocco.types import ChatMessage, GenerationOptions

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [
    "Write a long story about a lighthouse keeper.",
    "Explain in detail how a bicycle works.",
    "Describe the water cycle step by step.",
    "Write a detailed recipe for bread.",
    "Tell me about the history of Rome.",
    "Explain how computers store numbers.",
    "Describe a walk through a forest in autumn.",
    "Write a letter to a friend about your holiday.",
]


def _messages(i: int) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=PROMPTS[i % len(PROMPTS)])]


async def _vllm_run(engine, n: int, max_tokens: int) -> tuple[float, int]:
    options = GenerationOptions(max_tokens=max_tokens, temperature=0.0)

    async def one(i: int) -> int:
        usage = None
        async for ev in engine.generate(_messages(i), options=options):
            if ev.kind == "finish":
                usage = ev.usage
        assert usage is not None
        return usage.completion_tokens

    await one(0)  # warm-up (first request pays one-off costs)
    started = time.perf_counter()
    counts = await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - started, sum(counts)


async def _vllm(settings: Settings, n: int, max_tokens: int) -> tuple[float, float, int]:
    from llm.vllm_engine import VLLMEngine

    started = time.perf_counter()
    engine = VLLMEngine.start(settings)
    start_s = time.perf_counter() - started
    try:
        seconds, tokens = await _vllm_run(engine, n, max_tokens)
    finally:
        await engine.close()
    return start_s, seconds, tokens


def _hf(model_dir: Path, n: int, max_tokens: int, dtype: str) -> tuple[float, int, int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    texts = [
        tok.apply_chat_template(
            [m.to_openai() for m in _messages(i)], add_generation_prompt=True, tokenize=False
        )
        for i in range(n)
    ]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    eos = tok.eos_token_id

    def run() -> tuple[float, int]:
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                **batch, max_new_tokens=max_tokens, do_sample=False, pad_token_id=eos
            )
        seconds = time.perf_counter() - started
        new = out[:, batch["input_ids"].shape[1] :]
        tokens = 0
        for row in new.tolist():
            tokens += row.index(eos) + 1 if eos in row else len(row)
        return seconds, tokens

    with torch.no_grad():  # warm-up
        model.generate(**batch, max_new_tokens=2, do_sample=False, pad_token_id=eos)
    seconds, tokens = run()
    return seconds, tokens, torch.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mistral", "mixtral"], default="mistral")
    parser.add_argument("--n", type=int, default=8, help="concurrent requests")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--no-peer", action="store_true", help="skip the transformers peer")
    parser.add_argument("--dtype", default="auto",
                        help="llm.dtype; auto: what the engine serves here (checked)")
    parser.add_argument("--quick", action="store_true", help="2 requests x 8 tokens: a smoke check")
    args = parser.parse_args()
    if args.quick:
        args.n, args.max_tokens = 2, 8
    logging.basicConfig(level=logging.WARNING)
    # vLLM logs INFO to stdout from three processes; its own knob reaches all of
    # them (the spawned EngineCore and worker inherit the environment).
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    settings = Settings(
        data_dir=REPO / "var",
        llm=LLMSettings(bundled=args.model, max_model_len=2048, kv_cache_space_gib=1.0,
                        dtype=args.dtype),
    )
    prepared = prepare_models(settings)
    model_dir = getattr(prepared, args.model)
    # The dtype the engine really serves (auto resolved here); the peer gets it too.
    dtype = resolve_dtype(settings)

    start_s, v_s, v_tok = asyncio.run(_vllm(settings, args.n, args.max_tokens))
    v_rate = v_tok / v_s
    print(f"model: bundled {args.model} ({model_dir.name}), {dtype}, CPU")
    print(f"vllm engine start: {start_s:.1f} s")
    print(
        f"vllm: {args.n} concurrent x <= {args.max_tokens} tokens: "
        f"{v_tok} tokens in {v_s:.2f} s = {v_rate:.1f} tok/s"
    )
    if args.no_peer:
        return
    h_s, h_tok, threads = _hf(model_dir, args.n, args.max_tokens, dtype)
    h_rate = h_tok / h_s
    print(
        f"transformers generate (batch {args.n}, {dtype}, {threads} threads): "
        f"{h_tok} tokens in {h_s:.2f} s = {h_rate:.1f} tok/s"
    )
    print(f"ratio vllm/transformers: {v_rate / h_rate:.2f}x")


if __name__ == "__main__":
    main()
