"""Conversion of the dense SmolLM2 (Llama) reference into Mistral and Mixtral
checkpoints, and reading the GGUF reference itself.

Pure functions of configs and state dicts (no cache, no network); the
preparation that calls them lives in ``llm.models``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sirocco.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: Stored in float32: a Q4_1 weight (``d * q + m``, fp16 ``d`` and ``m``) is
#: exact in float32 and not in bf16, so bf16 storage would round every weight a
#: second time. The dtype they are *served* in is chosen per machine by the
#: check in ``llm.model_check`` (``llm.precision.resolve_dtype``).
CHECKPOINT_DTYPE = "float32"


def mistral_from_llama(
    llama_config: Any, state_dict: Mapping[str, torch.Tensor]
) -> tuple[Any, dict[str, torch.Tensor]]:
    """A MistralConfig and state dict computing exactly what the Llama model computes."""
    from transformers import MistralConfig

    _check_llama(llama_config)
    config = MistralConfig(**_common_config(llama_config), sliding_window=None)
    config.architectures = ["MistralForCausalLM"]
    out = {k: v for k, v in state_dict.items() if not k.startswith("lm_head.")}
    if not config.tie_word_embeddings:
        out["lm_head.weight"] = state_dict["lm_head.weight"]
    return config, out


def mixtral_from_llama(
    llama_config: Any,
    state_dict: Mapping[str, torch.Tensor],
    *,
    num_experts: int = 4,
    experts_per_tok: int = 2,
    seed: int = 0,
    router_std: float = 0.02,
) -> tuple[Any, dict[str, torch.Tensor]]:
    """Sparse upcycling: a MixtralConfig and canonical state dict equal to the dense model.

    Every expert is a copy of the layer's MLP; the router is random (seeded), and
    since Mixtral renormalises the top-k weights to sum to one, any routing gives
    the dense MLP's output (up to float rounding).
    """
    import torch
    from transformers import MixtralConfig

    _check_llama(llama_config)
    common = _common_config(llama_config)
    common["tie_word_embeddings"] = False
    config = MixtralConfig(
        **common,
        sliding_window=None,
        num_local_experts=num_experts,
        num_experts_per_tok=experts_per_tok,
        output_router_logits=False,
    )
    config.architectures = ["MixtralForCausalLM"]
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    mlp_names = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}
    for key, tensor in state_dict.items():
        if ".mlp." in key:
            prefix, rest = key.split(".mlp.", 1)
            proj = rest.split(".", 1)[0]
            for e in range(num_experts):
                out[f"{prefix}.block_sparse_moe.experts.{e}.{mlp_names[proj]}.weight"] = (
                    tensor.clone()
                )
        elif not key.startswith("lm_head."):
            out[key] = tensor
    for layer in range(llama_config.num_hidden_layers):
        router = torch.randn(num_experts, llama_config.hidden_size, generator=generator)
        out[f"model.layers.{layer}.block_sparse_moe.gate.weight"] = router * router_std
    lm_head = state_dict.get("lm_head.weight", state_dict["model.embed_tokens.weight"])
    out["lm_head.weight"] = lm_head.clone()
    return config, out


def write_checkpoint(
    out_dir: Path,
    config: Any,
    state_dict: Mapping[str, torch.Tensor],
    *,
    dtype: str = CHECKPOINT_DTYPE,
    tokenizer: Any = None,
) -> None:
    """Write config.json, generation_config.json, model.safetensors (and tokenizer files)."""
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    torch_dtype = getattr(torch, dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.dtype = dtype
    config.save_pretrained(out_dir)
    GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    ).save_pretrained(out_dir)
    tensors = {k: v.detach().to(torch_dtype).contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)


def load_gguf_reference(gguf_path: Path, *, dtype: str = "float32") -> tuple[Any, Any]:
    """The dense reference: (LlamaForCausalLM, tokenizer) dequantized from the GGUF file.

    The tokenizer always carries a chat template (from the GGUF metadata when
    transformers did not keep it).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = gguf_chat_template(gguf_path)
    if not tokenizer.chat_template:
        raise ConfigError(f"{gguf_path} has no chat template")
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, dtype=getattr(torch, dtype), **kwargs
    )
    model.eval()
    return model, tokenizer


def gguf_chat_template(gguf_path: Path) -> str | None:
    """The ``tokenizer.chat_template`` string stored in a GGUF file's metadata."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def _check_llama(config: Any) -> None:
    # Mistral and Mixtral have no biases: converting a biased Llama would drop them.
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ConfigError("cannot convert a Llama model with attention/MLP biases")
    if config.hidden_act != "silu":
        raise ConfigError(f"cannot convert hidden_act={config.hidden_act!r}; need 'silu'")


def _common_config(llama: Any) -> dict[str, Any]:
    rope = dict(getattr(llama, "rope_parameters", None) or {})
    if not rope:
        rope = {"rope_type": "default", "rope_theta": llama.rope_theta}
    if rope.get("rope_type", "default") != "default":
        raise ConfigError(f"cannot convert rope_type={rope['rope_type']!r}")
    return {
        "vocab_size": llama.vocab_size,
        "hidden_size": llama.hidden_size,
        "intermediate_size": llama.intermediate_size,
        "num_hidden_layers": llama.num_hidden_layers,
        "num_attention_heads": llama.num_attention_heads,
        "num_key_value_heads": llama.num_key_value_heads,
        "head_dim": getattr(llama, "head_dim", None)
        or llama.hidden_size // llama.num_attention_heads,
        "hidden_act": llama.hidden_act,
        "max_position_embeddings": llama.max_position_embeddings,
        "rms_norm_eps": llama.rms_norm_eps,
        "rope_parameters": rope,
        "tie_word_embeddings": bool(llama.tie_word_embeddings),
        "bos_token_id": llama.bos_token_id,
        "eos_token_id": llama.eos_token_id,
        "pad_token_id": llama.pad_token_id,
        "attention_dropout": 0.0,
    }
