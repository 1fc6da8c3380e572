"""The real bundled-model preparation: derived checkpoints decode like the reference.

The reference is the Llama model transformers dequantizes from the GGUF file.
The checkpoints are stored in bfloat16 (what vLLM serves on CPU), so the
reference's weights are rounded to bfloat16 too; all three then run in float32,
which makes the comparison about the conversion, not about the storage dtype.
"""

from __future__ import annotations

import json
import time

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from llm.models import (  # noqa: E402
    CHECKPOINT_DTYPE,
    RECIPE_VERSION,
    bundled_model_path,
    load_gguf_reference,
    prepare_models,
)

pytestmark = pytest.mark.integration

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three uses of a paperclip.",
]
NEW_TOKENS = 20


@pytest.fixture(scope="module")
def reference(prepared_models):
    model, tokenizer = load_gguf_reference(prepared_models.gguf, dtype="float32")
    storage = getattr(torch, CHECKPOINT_DTYPE)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(storage).to(torch.float32))
    return model, tokenizer


@pytest.fixture(scope="module")
def prompt_ids(reference):
    _, tokenizer = reference
    out = []
    for text in PROMPTS:
        enc = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        out.append(enc["input_ids"])
    return out


@pytest.fixture(scope="module")
def reference_tokens(reference, prompt_ids):
    model, _ = reference
    return [_greedy(model, ids) for ids in prompt_ids]


@torch.no_grad()
def _greedy(model, input_ids) -> list[int]:
    out = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,  # compare the full 20 tokens, even past <|im_end|>
        do_sample=False,
        pad_token_id=2,
    )
    return out[0, input_ids.shape[1] :].tolist()


def test_prepare_is_cached_and_marked(prepared_models, models_settings):
    started = time.monotonic()
    again = prepare_models(models_settings)
    assert time.monotonic() - started < 2.0
    assert again == prepared_models
    marker = json.loads((models_settings.models_path / "prepared.json").read_text())
    assert marker["recipe_version"] == RECIPE_VERSION
    assert len(marker["source_sha256"]) == 64
    assert bundled_model_path(models_settings, "mistral") == prepared_models.mistral
    assert bundled_model_path(models_settings, "mixtral") == prepared_models.mixtral
    mistral_cfg = json.loads((prepared_models.mistral / "config.json").read_text())
    mixtral_cfg = json.loads((prepared_models.mixtral / "config.json").read_text())
    assert mistral_cfg["architectures"] == ["MistralForCausalLM"]
    assert mistral_cfg["sliding_window"] is None
    assert mixtral_cfg["architectures"] == ["MixtralForCausalLM"]
    assert mixtral_cfg["num_local_experts"] == marker["num_experts"]
    assert mixtral_cfg["tie_word_embeddings"] is False


def test_tokenizer_keeps_chatml_template(prepared_models):
    tok = transformers.AutoTokenizer.from_pretrained(prepared_models.mistral)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert "<|im_start|>user\nhi<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.eos_token == "<|im_end|>"


@pytest.mark.parametrize("which", ["mistral", "mixtral"])
def test_derived_checkpoint_decodes_like_reference(
    which, prepared_models, prompt_ids, reference_tokens
):
    path = getattr(prepared_models, which)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert type(model).__name__ == f"{which.capitalize()}ForCausalLM"
    got = [_greedy(model, ids) for ids in prompt_ids]
    assert got == reference_tokens
    # Sanity: the reference says something, not a degenerate repeat.
    assert all(len(set(tokens)) > 5 for tokens in reference_tokens)
