"""Equivalent reshapes of a checkpoint, so a parallel layout divides it.

Tensor parallelism splits attention heads across ranks: vLLM needs the
number of query heads, and the number of KV heads, divisible by
``tensor_parallel_size`` (or KV heads replicated evenly). SmolLM2-135M has 9
query heads over 3 KV heads, so only TP=3 or 9 split it, and 3 ranks on a
2-core machine are no test of expert parallelism.

``pad_attention_heads`` adds whole KV groups whose weights are zero: new KV
heads with zero ``k_proj``/``v_proj`` rows, their query heads with zero
``q_proj`` rows, and zero ``o_proj`` columns for those query heads. A new
head attends over values that are all zero and its output is multiplied by
zero columns, so the padded model computes exactly what the original does,
while 9/3 heads become 12/4 and TP=2 divides them (6/2 per rank).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sirocco.errors import ConfigError

if TYPE_CHECKING:
    import torch


def pad_attention_heads(config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor],
                        kv_heads: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` with ``kv_heads`` KV heads (zero-padded groups), same outputs."""
    import torch

    heads, old_kv = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    if kv_heads < old_kv:
        raise ConfigError(f"cannot pad {old_kv} KV heads down to {kv_heads}")
    group = heads // old_kv
    new_heads = group * kv_heads
    extra_q, extra_kv = (new_heads - heads) * head_dim, (kv_heads - old_kv) * head_dim
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key.endswith("self_attn.q_proj.weight"):
            tensor = torch.cat([tensor, tensor.new_zeros(extra_q, tensor.shape[1])])
        elif key.endswith(("self_attn.k_proj.weight", "self_attn.v_proj.weight")):
            tensor = torch.cat([tensor, tensor.new_zeros(extra_kv, tensor.shape[1])])
        elif key.endswith("self_attn.o_proj.weight"):
            tensor = torch.cat([tensor, tensor.new_zeros(tensor.shape[0], extra_q)], dim=1)
        elif key.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
            raise ConfigError("cannot pad attention with biases")
        out[key] = tensor.contiguous()
    new_config = {**config, "num_attention_heads": new_heads, "num_key_value_heads": kv_heads,
                  "head_dim": head_dim}
    return new_config, out


def padded_checkpoint(src: Path, dst: Path, kv_heads: int) -> Path:
    """``dst``: a copy of the checkpoint folder ``src`` padded to ``kv_heads`` KV heads.

    Cached: reused when ``dst`` records the same source and head count.
    """
    from safetensors.torch import load_file, save_file

    stamp = {"source": str(src.resolve()), "kv_heads": kv_heads,
             "source_mtime": (src / "model.safetensors").stat().st_mtime}
    marker = dst / "padded.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == stamp:
        return dst
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    config, tensors = pad_attention_heads(config, load_file(src / "model.safetensors"), kv_heads)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("model.safetensors", "padded.json"))
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (tmp / "padded.json").write_text(json.dumps(stamp), encoding="utf-8")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst
