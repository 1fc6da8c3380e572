"""`sirocco engine info`: the computed KV-cache capacity equals what vLLM computes,
and --start on the bundled Mixtral profile reads vLLM's own numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm.engine_info import describe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PROFILES = Path(__file__).resolve().parents[2] / "infra" / "vllm"


def test_computed_capacity_matches_the_running_engine(vllm_engine, engine_settings):
    computed = describe(engine_settings)["kv_cache"]
    actual = vllm_engine.engine_config_summary()
    assert computed["block_size"] == actual["block_size"]
    assert computed["blocks"] == actual["kv_cache_blocks"]
    assert computed["tokens"] == actual["kv_cache_tokens"]


def test_engine_info_start_with_the_cpu_mixtral_profile(prepared_models, monkeypatch):
    from cli.main import app
    from sirocco.settings import get_settings

    monkeypatch.setenv("SIROCCO_DATA_DIR", str(Path(__file__).resolve().parents[2] / "var"))
    monkeypatch.setenv("SIROCCO_LLM__MAX_NUM_SEQS", "4")
    # vLLM's Prometheus collectors are process-wide: a second engine with stats
    # would replace those of the session engine that other tests scrape.
    monkeypatch.setenv("SIROCCO_LLM__LOG_STATS", "false")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["engine", "info", "--json", "--start", "--profile",
                                          str(PROFILES / "cpu-mixtral.yaml")])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    # vLLM may log into the same captured stdout: the JSON is the last "{" line on.
    start = ("\n" + result.output).rindex("\n{\n")
    info, _ = json.JSONDecoder().raw_decode(result.output[start:])
    started = info["started"]
    assert started["architectures"] == ["MixtralForCausalLM"]
    assert started["num_experts"] == 4 and started["experts_per_tok"] == 2
    assert started["block_size"] == 128
    assert started["max_num_batched_tokens"] == 2048
    assert started["kv_cache_bytes"] == 1 << 30
    # The environment won over the profile (32), and the estimate is vLLM's.
    assert started["max_num_seqs"] == 4
    assert info["kv_cache"]["blocks"] == started["kv_cache_blocks"] > 0
    assert started["kv_cache_tokens"] == started["kv_cache_blocks"] * 128
