"""What the in-process vLLM engine is started with: ``settings.llm`` as
vLLM's engine arguments (the dtype resolved per machine by ``llm.precision``),
and the bundled checkpoint reshaped when tensor parallelism cannot split it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm.precision import resolve_dtype
from sirocco.errors import ConfigError
from sirocco.settings import Settings

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs

logger = logging.getLogger(__name__)

GIB = 1 << 30


def _compact_structured_outputs() -> Any:
    from vllm.config import StructuredOutputsConfig

    return StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True)


def engine_kwargs_from_settings(settings: Settings, *, materialize: bool = True
                                ) -> dict[str, Any]:
    """The keyword arguments of vLLM's ``AsyncEngineArgs`` that ``settings.llm`` sets.

    ``materialize=False`` names a derived bundled checkpoint (see
    ``bundled_for_parallel``) without writing it.
    """
    llm = settings.llm
    model = llm.model or str(bundled_for_parallel(settings, materialize=materialize))
    kwargs: dict[str, Any] = {
        "model": model,
        "served_model_name": llm.served_model_name,
        # "auto" resolved per machine and checkpoint (llm.precision).
        "dtype": resolve_dtype(settings),
        "seed": llm.seed,
        "max_model_len": llm.max_model_len,
        "enforce_eager": llm.enforce_eager,
        "enable_prefix_caching": llm.enable_prefix_caching,
        "tensor_parallel_size": llm.tensor_parallel_size,
        "enable_expert_parallel": llm.enable_expert_parallel,
        "max_num_seqs": llm.max_num_seqs,
        "gpu_memory_utilization": llm.gpu_memory_utilization,
        "kv_cache_dtype": llm.kv_cache_dtype,
        "tokenizer_mode": llm.tokenizer_mode,
        # On: vLLM registers its Prometheus metrics (served at /metrics).
        "disable_log_stats": not llm.log_stats,
        # Structured outputs (forced tool calls) as compact JSON: xgrammar reads
        # this engine-wide only (the per-request field is for other backends).
        # With free whitespace a small model spent its max_tokens on newlines.
        "structured_outputs_config": _compact_structured_outputs(),
    }
    if llm.kv_cache_space_gib is not None:
        # An explicit KV cache size. On CPU this engine arg is what the legacy
        # VLLM_CPU_KVCACHE_SPACE env var sets (that variable, if exported, still
        # wins); without it vLLM sizes the cache from gpu_memory_utilization of
        # *total* RAM and refuses to start on a busy machine.
        kwargs["kv_cache_memory_bytes"] = int(llm.kv_cache_space_gib * GIB)
    if llm.block_size is not None:
        kwargs["block_size"] = llm.block_size
    if llm.max_num_batched_tokens is not None:
        kwargs["max_num_batched_tokens"] = llm.max_num_batched_tokens
    return kwargs


def engine_args_from_settings(settings: Settings) -> AsyncEngineArgs:
    """The vLLM ``AsyncEngineArgs`` for ``settings.llm``.

    Constructing them resolves the model: with ``HF_HUB_OFFLINE`` vLLM maps a
    hub id to its cached snapshot and fails when there is none. Use
    ``engine_kwargs_from_settings`` to inspect a configuration without that.
    """
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "vLLM is not installed; install the extra: `pip install 'sirocco[cpu]'` "
            "(or `sirocco[gpu]` on a CUDA machine)"
        ) from exc
    return AsyncEngineArgs(**engine_kwargs_from_settings(settings))


def bundled_for_parallel(settings: Settings, *, materialize: bool = True) -> Path:
    """The bundled checkpoint, padded when tensor parallelism cannot split its heads.

    SmolLM2 has 9 query heads over 3 KV heads: TP=2 divides neither, so the
    engine serves ``<name>-kv4`` instead, the same model with a zero KV group
    added (12/4 heads, identical outputs; ``llm.model_shapes``), written on
    first use next to the original.
    """
    from llm.model_shapes import padded_checkpoint
    from llm.models import bundled_model_path

    path = bundled_model_path(settings, settings.llm.bundled)
    tp = settings.llm.tensor_parallel_size
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    heads, kv = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    divisible = heads % tp == 0 and (kv % tp == 0 if kv >= tp else tp % kv == 0)
    if tp <= 1 or divisible:
        return path
    kv_heads = -(-kv // tp) * tp
    target = path.with_name(f"{path.name}-kv{kv_heads}")
    if not materialize:
        return target
    logger.info("padding the bundled checkpoint's attention heads for tensor parallelism",
                extra={"tensor_parallel_size": tp, "kv_heads": kv_heads})
    return padded_checkpoint(path, target, kv_heads)
