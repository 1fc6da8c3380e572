"""infra/vllm/*.yaml profiles load into LLMSettings; `sirocco engine info` without
starting an engine (the KV-cache arithmetic is checked against vLLM in
tests/integration/test_llm_engine_info.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cli.main import app
from llm.engine_info import kv_capacity
from sirocco.settings import LLMSettings, Settings

PROFILES = Path(__file__).resolve().parents[2] / "infra" / "vllm"
KEYS = {"block_size", "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching",
        "kv_cache_dtype", "kv_cache_space_gib"}


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_profile_loads_and_sets_the_engine_knobs(path: Path) -> None:
    import yaml

    raw = yaml.safe_load(path.read_text())
    assert KEYS <= set(raw), f"{path.name} misses {KEYS - set(raw)}"
    assert raw.get("kv_cache_space_gib") is not None or "gpu_memory_utilization" in raw
    settings = LLMSettings(profile=path)
    assert settings.block_size == raw["block_size"]
    assert settings.max_num_batched_tokens == raw["max_num_batched_tokens"]


def test_the_five_profiles_of_the_issue() -> None:
    by_name = {p.stem: LLMSettings(profile=p) for p in PROFILES.glob("*.yaml")}
    assert by_name["cpu-mistral"].bundled == "mistral"
    assert by_name["cpu-mixtral"].bundled == "mixtral"
    mistral = by_name["mistral-7b-instruct-v0.3-1gpu"]
    assert (mistral.tensor_parallel_size, mistral.tool_parser) == (1, "mistral")
    tp = by_name["mixtral-8x7b-instruct-tp2-ep"]
    assert (tp.tensor_parallel_size, tp.enable_expert_parallel) == (2, True)
    fp8 = by_name["mixtral-8x7b-instruct-fp8-1gpu"]
    assert (fp8.tensor_parallel_size, fp8.kv_cache_dtype) == (1, "fp8")


def test_explicit_values_win_over_the_profile(monkeypatch, tmp_path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("max_num_seqs: 7\nblock_size: 64\n")
    monkeypatch.setenv("SIROCCO_LLM__PROFILE", str(profile))
    monkeypatch.setenv("SIROCCO_LLM__MAX_NUM_SEQS", "3")
    llm = Settings().llm
    assert (llm.max_num_seqs, llm.block_size) == (3, 64)


def test_unknown_profile_keys_are_refused(tmp_path) -> None:
    profile = tmp_path / "typo.yaml"
    profile.write_text("max_num_seq: 7\n")
    with pytest.raises(ValidationError, match="unknown keys: max_num_seq"):
        LLMSettings(profile=profile)
    with pytest.raises(ValidationError, match="cannot read the LLM profile"):
        LLMSettings(profile=tmp_path / "missing.yaml")


def test_kv_capacity_arithmetic() -> None:
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 dims.
    config = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
              "hidden_size": 576, "torch_dtype": "bfloat16"}
    cap = kv_capacity(config, kv_cache_bytes=1 << 30, block_size=128)
    assert cap["bytes_per_token"] == 2 * 30 * 3 * 64 * 2
    assert cap["blocks"] == (1 << 30) // (23040 * 128) == 364
    assert cap["tokens"] == 364 * 128
    fp8 = kv_capacity(config, kv_cache_bytes=1 << 30, block_size=128, kv_cache_dtype="fp8")
    assert fp8["bytes_per_token"] == 11520  # one byte an element
    assert fp8["blocks"] == (1 << 30) // (11520 * 128) == 728


def test_engine_info_of_a_gpu_profile_without_starting(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SIROCCO_DATA_DIR", str(tmp_path))
    from sirocco.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["engine", "info", "--json", "--profile",
                                          str(PROFILES / "mixtral-8x7b-instruct-tp2-ep.yaml")])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    args = info["engine_args"]
    assert (args["tensor_parallel_size"], args["enable_expert_parallel"]) == (2, True)
    assert args["model"] == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert args["kv_cache_memory_bytes"] is None
    assert "gpu_memory_utilization=0.9" in info["kv_cache"]


def test_cpu_thread_binding_splits_cores_when_numa_nodes_are_fewer_than_ranks() -> None:
    from llm.cpu import cpu_thread_binding

    assert cpu_thread_binding(1, [0, 1], numa_nodes=1) is None
    assert cpu_thread_binding(2, [0, 1], numa_nodes=2) is None  # vLLM's auto copes
    assert cpu_thread_binding(2, [1, 0], numa_nodes=1) == "0|1"
    assert cpu_thread_binding(2, range(8), numa_nodes=1) == "0-3|4-7"
    assert cpu_thread_binding(2, [0, 2, 4, 6], numa_nodes=1) == "0,2|4,6"
    assert cpu_thread_binding(3, [0, 1], numa_nodes=1) == "0|1|0"  # oversubscribed
