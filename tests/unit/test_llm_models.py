"""The Llama → Mistral / Mixtral conversions on a tiny random model (no network).

Each converted checkpoint is written with ``write_checkpoint`` and read back by
transformers' own loader, so the test covers the on-disk layout vLLM reads too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import need_module

torch = need_module("torch")
transformers = need_module("transformers")

from llm.conversion import (  # noqa: E402
    mistral_from_llama,
    mixtral_from_llama,
    write_checkpoint,
)
from sirocco.errors import ConfigError  # noqa: E402

VOCAB = 100


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    # Default init is tiny (std 0.02) and gives near-uniform logits; larger
    # weights make greedy decoding sensitive to any wiring mistake.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model


@pytest.fixture(scope="module")
def input_ids():
    return torch.tensor([[1, 17, 42, 5, 99, 23, 64, 8]])


def _reload(tmp_path: Path, name: str, config, tensors):
    out = tmp_path / name
    write_checkpoint(out, config, tensors, dtype="float32")
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    return model.eval(), out


def _greedy(model, input_ids, n: int = 12) -> list[int]:
    out = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=n,
        do_sample=False,
        pad_token_id=2,
        eos_token_id=None,  # random model: never stop early, compare all n tokens
    )
    return out[0, input_ids.shape[1] :].tolist()


@torch.no_grad()
def test_mistral_conversion_gives_identical_logits(tiny_llama, input_ids, tmp_path):
    config, tensors = mistral_from_llama(tiny_llama.config, tiny_llama.state_dict())
    mistral, out = _reload(tmp_path, "mistral", config, tensors)

    assert type(mistral).__name__ == "MistralForCausalLM"
    saved = json.loads((out / "config.json").read_text())
    assert saved["architectures"] == ["MistralForCausalLM"]
    assert saved["sliding_window"] is None
    ref = tiny_llama(input_ids).logits
    got = mistral(input_ids).logits
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert _greedy(mistral, input_ids) == _greedy(tiny_llama, input_ids)


@torch.no_grad()
def test_mixtral_upcycling_matches_dense_model(tiny_llama, input_ids, tmp_path):
    config, tensors = mixtral_from_llama(
        tiny_llama.config, tiny_llama.state_dict(), num_experts=4, experts_per_tok=2, seed=3
    )
    # Canonical Mixtral layout: what vLLM's weight loader expects.
    assert "model.layers.1.block_sparse_moe.experts.3.w1.weight" in tensors
    assert "model.layers.0.block_sparse_moe.gate.weight" in tensors
    assert not any(".mlp." in k for k in tensors)
    torch.testing.assert_close(
        tensors["model.layers.0.block_sparse_moe.experts.2.w3.weight"],
        tiny_llama.state_dict()["model.layers.0.mlp.up_proj.weight"],
    )
    mixtral, out = _reload(tmp_path, "mixtral", config, tensors)

    assert type(mixtral).__name__ == "MixtralForCausalLM"
    saved = json.loads((out / "config.json").read_text())
    assert saved["num_local_experts"] == 4
    assert saved["num_experts_per_tok"] == 2
    assert saved["tie_word_embeddings"] is False
    # Untied: its own lm_head tensor, equal to the embeddings.
    assert mixtral.lm_head.weight.data_ptr() != mixtral.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(mixtral.lm_head.weight, tiny_llama.model.embed_tokens.weight)

    ref = tiny_llama(input_ids).logits
    got = mixtral(input_ids).logits
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert _greedy(mixtral, input_ids) == _greedy(tiny_llama, input_ids)


@torch.no_grad()
def test_mixtral_router_actually_routes(tiny_llama, input_ids, tmp_path):
    """The router is random but real: different tokens pick different experts."""
    config, tensors = mixtral_from_llama(
        tiny_llama.config, tiny_llama.state_dict(), num_experts=4, experts_per_tok=2, seed=0
    )
    mixtral, _ = _reload(tmp_path, "mixtral", config, tensors)
    out = mixtral(input_ids, output_router_logits=True)
    chosen = {tuple(sorted(row.topk(2).indices.tolist())) for row in out.router_logits[0]}
    assert len(chosen) > 1


def test_router_is_seeded(tiny_llama):
    sd = tiny_llama.state_dict()
    key = "model.layers.0.block_sparse_moe.gate.weight"
    a = mixtral_from_llama(tiny_llama.config, sd, seed=1)[1][key]
    b = mixtral_from_llama(tiny_llama.config, sd, seed=1)[1][key]
    c = mixtral_from_llama(tiny_llama.config, sd, seed=2)[1][key]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_biased_llama_is_refused(tiny_llama):
    config = tiny_llama.config.__class__(**{**tiny_llama.config.to_dict(), "mlp_bias": True})
    with pytest.raises(ConfigError, match="biases"):
        mistral_from_llama(config, tiny_llama.state_dict())


def test_bundled_model_path_missing_tells_how_to_fix(tmp_path):
    from llm.models import bundled_model_path
    from sirocco.settings import Settings

    settings = Settings(data_dir=tmp_path)
    with pytest.raises(ConfigError, match="run `sirocco models prepare`"):
        bundled_model_path(settings, "mistral")
    with pytest.raises(ConfigError, match="valid: 'mistral', 'mixtral'"):
        bundled_model_path(settings, "llama")  # type: ignore[arg-type]


@torch.no_grad()
def test_padding_attention_heads_keeps_the_outputs(input_ids, tmp_path):
    from llm.model_shapes import padded_checkpoint

    torch.manual_seed(1)
    # SmolLM2's shape in small: 3 query heads per KV head, 3 KV heads (TP=2 cannot split it).
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=36, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=9, num_key_value_heads=3, head_dim=4, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=2)
    llama = transformers.LlamaForCausalLM(config).eval()
    for p in llama.parameters():
        if p.dim() == 2:
            p.normal_(0.0, 0.3)
    mixtral_config, tensors = mixtral_from_llama(llama.config, llama.state_dict(), seed=0)
    src = tmp_path / "src"
    write_checkpoint(src, mixtral_config, tensors, dtype="float32")
    dst = padded_checkpoint(src, tmp_path / "padded", kv_heads=4)
    saved = json.loads((dst / "config.json").read_text())
    assert (saved["num_attention_heads"], saved["num_key_value_heads"]) == (12, 4)
    assert padded_checkpoint(src, dst, kv_heads=4) == dst  # cached
    original = transformers.AutoModelForCausalLM.from_pretrained(src).eval()
    padded = transformers.AutoModelForCausalLM.from_pretrained(dst).eval()
    torch.testing.assert_close(padded(input_ids).logits, original(input_ids).logits,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="cannot pad"):
        padded_checkpoint(src, tmp_path / "less", kv_heads=2)
