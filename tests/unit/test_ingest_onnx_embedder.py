"""The embedding backend choice: settings, factory errors, the ONNX adapter's refusals.

No model is exported here (that takes ~20 s): the real-model checks live in
``tests/integration/test_ingest_onnx_embedder.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest.embedding.base import create_embedder
from ingest.embedding.onnx_export import prepare_embedding_model
from sirocco.errors import ConfigError
from sirocco.settings import EmbeddingSettings, Settings


def _with_backend(tmp_path: Path, backend: str) -> Settings:
    # model_copy skips validation: how a value the Literal does not know reaches code.
    settings = Settings(env="test", data_dir=tmp_path)
    embedding = settings.embedding.model_copy(update={"backend": backend})
    return settings.model_copy(update={"embedding": embedding})


def test_backend_and_threads_settings(monkeypatch: pytest.MonkeyPatch):
    assert EmbeddingSettings().backend == "auto"
    assert EmbeddingSettings().threads is None
    monkeypatch.setenv("SIROCCO_EMBEDDING__BACKEND", "onnx")
    monkeypatch.setenv("SIROCCO_EMBEDDING__THREADS", "1")
    cfg = Settings().embedding
    assert (cfg.backend, cfg.threads) == ("onnx", 1)


def test_settings_refuse_an_unknown_backend():
    with pytest.raises(ValidationError, match="'torch-bf16', 'onnx' or 'onnx-int8'"):
        Settings(embedding={"backend": "tensorrt"})
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Settings(embedding={"threads": 0})


def test_factory_names_the_valid_backends(tmp_path: Path):
    settings = _with_backend(tmp_path, "tensorrt")
    expected = ("unknown embedding backend 'tensorrt'; valid: 'auto', 'torch', 'torch-bf16', "
                "'onnx', 'onnx-int8'")
    with pytest.raises(ConfigError, match=expected):
        create_embedder(settings)
    with pytest.raises(ConfigError, match=expected):
        prepare_embedding_model(settings)


def test_torch_backend_needs_no_export(tmp_path: Path):
    settings = Settings(env="test", data_dir=tmp_path, embedding={"backend": "torch"})
    assert prepare_embedding_model(settings) is None
    assert not (settings.models_path / "embeddings").exists()


def test_missing_onnxruntime_gives_an_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    settings = Settings(env="test", data_dir=tmp_path, embedding={"backend": "onnx"})
    hint = r"onnxruntime is not installed: `pip install onnxruntime"
    with pytest.raises(ConfigError, match=hint):
        create_embedder(settings)


def test_onnx_backends_refuse_a_gpu_device(tmp_path: Path):
    settings = Settings(
        env="test", data_dir=tmp_path, embedding={"backend": "onnx-int8", "device": "cuda"}
    )
    with pytest.raises(ConfigError, match="run on the CPU only, not 'cuda'.*BACKEND=torch"):
        create_embedder(settings)


def test_a_model_with_modules_onnx_cannot_compute_is_refused(tmp_path: Path):
    # A Dense layer after pooling is not in the exported graph: refuse, never embed wrongly.
    model = tmp_path / "model"
    model.mkdir()
    modules = [
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (model / "modules.json").write_text(json.dumps(modules))
    settings = Settings(
        env="test", data_dir=tmp_path, embedding={"backend": "onnx", "model": str(model)}
    )
    with pytest.raises(ConfigError, match="has a Dense module.*BACKEND=torch"):
        create_embedder(settings)
    assert not (settings.models_path / "embeddings").exists()


def test_unsupported_pooling_is_refused(tmp_path: Path):
    model = tmp_path / "model"
    (model / "1_Pooling").mkdir(parents=True)
    modules = [{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (model / "modules.json").write_text(json.dumps(modules))
    pooling = {"word_embedding_dimension": 8, "pooling_mode_mean_tokens": False,
               "pooling_mode_weightedmean_tokens": True}
    (model / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    settings = Settings(
        env="test", data_dir=tmp_path, embedding={"backend": "onnx", "model": str(model)}
    )
    with pytest.raises(ConfigError, match=r"pooling \['pooling_mode_weightedmean_tokens'\]"):
        create_embedder(settings)


def test_bert_builder_says_which_models_it_does_not_build(tmp_path: Path):
    from ingest.embedding.onnx_bert import supports

    def model(**config: object) -> Path:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "model.safetensors").write_bytes(b"")
        return folder

    assert supports(model(model_type="bert", hidden_act="gelu")) is None
    assert supports(model(model_type="xlm-roberta", hidden_act="gelu")) == (
        "model_type is 'xlm-roberta', not 'bert'")
    assert supports(model(model_type="bert", hidden_act="gelu_new")) == (
        "hidden_act is 'gelu_new', not 'gelu'")
    relative = model(model_type="bert", hidden_act="gelu", position_embedding_type="relative_key")
    assert supports(relative) == "position_embedding_type is 'relative_key', not 'absolute'"
    (relative / "model.safetensors").unlink()
    (relative / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_act": "gelu"}))
    assert supports(relative) == "no safetensors weights"
    assert supports(tmp_path / "missing").startswith("config.json unreadable")
