"""The vLLM plugin's fix for expert parallelism on CPU (llm/vllm_patches.py)."""

from __future__ import annotations

import importlib.metadata

from tests.support import need_module

torch = need_module("torch")


def test_global_expert_ids_become_local_and_foreign_experts_weigh_nothing() -> None:
    from llm.vllm_patches import map_to_local_experts

    # Rank 1 of 2, 4 experts: global 2 and 3 live here as local 0 and 1.
    expert_map = torch.tensor([-1, -1, 0, 1], dtype=torch.int32)
    ids = torch.tensor([[0, 2], [3, 1], [2, 3]], dtype=torch.int32)
    weights = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.5, 0.5]])
    w, i = map_to_local_experts(weights, ids, expert_map)
    assert i.dtype == ids.dtype and i.tolist() == [[0, 0], [1, 0], [0, 1]]
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.4], [0.7, 0.0], [0.5, 0.5]]))


def test_the_patch_is_registered_as_a_vllm_plugin_and_applies() -> None:
    need_module("vllm")
    names = {ep.name: ep.value for ep in
             importlib.metadata.entry_points(group="vllm.general_plugins")}
    assert names.get("sirocco") == "llm.vllm_patches:register"
    from llm.vllm_patches import register

    register()
    register()  # idempotent
    from vllm.model_executor.layers.fused_moe.experts.cpu_moe import CPUUnquantizedExperts

    assert getattr(CPUUnquantizedExperts.apply, "_sirocco_patched", False)
