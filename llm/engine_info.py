"""What an engine configuration amounts to, for ``sirocco engine info``.

``describe(settings)`` gives the effective vLLM engine arguments and, when
the model's ``config.json`` is on disk and the KV cache has an explicit size
(CPU profiles), its capacity computed the way vLLM sizes it: one block holds
``block_size`` tokens of K and V for every layer, so

    bytes per token = 2 (K, V) x layers x KV heads x head dim x bytes per element
    blocks          = kv_cache_bytes // (bytes per token x block_size)

With a GPU profile the cache is what ``gpu_memory_utilization`` leaves after
weights and activations, known only once the engine has profiled memory:
``describe_started`` reads vLLM's own ``num_gpu_blocks x block_size``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sirocco.settings import Settings

GIB = 1 << 30
_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "half": 2, "float": 4,
          "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1}
# vLLM CPU's default when block_size is unset (vllm/platforms/cpu.py).
CPU_DEFAULT_BLOCK_SIZE = 128


def kv_bytes_per_token(config: dict[str, Any], kv_cache_dtype: str, dtype: str) -> int:
    """Bytes the KV cache spends per token for a HF ``config.json`` dict."""
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    if kv_cache_dtype != "auto":
        element = _BYTES[kv_cache_dtype]
    else:
        name = dtype if dtype != "auto" else str(config.get("torch_dtype") or
                                                 config.get("dtype") or "bfloat16")
        element = _BYTES.get(name.removeprefix("torch."), 2)
    return 2 * layers * kv_heads * head_dim * element


def kv_capacity(config: dict[str, Any], *, kv_cache_bytes: int, block_size: int,
                kv_cache_dtype: str = "auto", dtype: str = "auto") -> dict[str, int]:
    """``{"bytes_per_token", "blocks", "tokens"}`` for a KV cache of ``kv_cache_bytes``."""
    per_token = kv_bytes_per_token(config, kv_cache_dtype, dtype)
    blocks = kv_cache_bytes // (per_token * block_size)
    return {"bytes_per_token": per_token, "blocks": blocks, "tokens": blocks * block_size}


def describe(settings: Settings) -> dict[str, Any]:
    """Effective engine configuration and (when computable) KV-cache capacity,
    without starting anything."""
    llm = settings.llm
    info: dict[str, Any] = {"provider": llm.provider,
                            "profile": str(llm.profile) if llm.profile else None}
    if llm.provider == "openai":
        info.update(base_url=llm.base_url, model=llm.model or llm.served_model_name,
                    kv_cache="on the remote server (its /metrics: vllm:cache_config_info)")
        return info
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs

    from llm.vllm_args import engine_kwargs_from_settings

    # vLLM's defaults overlaid with ours, without constructing AsyncEngineArgs:
    # its __post_init__ resolves (offline: looks up the cache for) the model.
    effective = {f.name: f.default for f in dataclasses.fields(AsyncEngineArgs)
                 if f.default is not dataclasses.MISSING}
    effective.update(engine_kwargs_from_settings(settings, materialize=False))
    args = SimpleNamespace(**effective)
    info["engine_args"] = {k: getattr(args, k) for k in (
        "model", "served_model_name", "dtype", "tokenizer_mode", "max_model_len",
        "enforce_eager", "block_size", "kv_cache_memory_bytes", "gpu_memory_utilization",
        "kv_cache_dtype", "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching",
        "tensor_parallel_size", "enable_expert_parallel", "seed")}
    info["tool_parser"] = llm.tool_parser
    info["max_inflight"] = llm.max_inflight
    config_file = Path(str(args.model)) / "config.json"
    if llm.kv_cache_space_gib is None:
        info["kv_cache"] = ("sized at start-up from gpu_memory_utilization="
                            f"{llm.gpu_memory_utilization}; run with --start to read it")
    elif not config_file.is_file():
        info["kv_cache"] = f"{config_file} is not on this machine; run with --start"
    else:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        block_size = llm.block_size or CPU_DEFAULT_BLOCK_SIZE
        capacity = kv_capacity(config, kv_cache_bytes=int(llm.kv_cache_space_gib * GIB),
                               block_size=block_size, kv_cache_dtype=llm.kv_cache_dtype,
                               dtype=args.dtype)
        info["kv_cache"] = {"source": "computed from config.json", "block_size": block_size,
                            "bytes": int(llm.kv_cache_space_gib * GIB), **capacity,
                            "full_length_sequences": capacity["tokens"] // llm.max_model_len}
    return info


async def describe_started(settings: Settings) -> dict[str, Any]:
    """Start the in-process engine, read vLLM's effective config and computed
    KV-cache blocks, shut it down. Slow (tens of seconds on CPU)."""
    from llm.vllm_engine import VLLMEngine

    engine = VLLMEngine.start(settings)
    try:
        summary = engine.engine_config_summary()
    finally:
        await engine.close()
    summary["kv_cache_source"] = "vLLM after start-up (num_gpu_blocks x block_size)"
    return summary
