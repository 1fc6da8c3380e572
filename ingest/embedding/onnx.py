"""Embeddings with ONNX Runtime: the ``Embedder`` port on an ONNX export of the model.

Computes what the sentence-transformers model computes (its ``modules.json``:
Transformer, Pooling, Normalize) from the graph written by ``ingest.embedding.onnx_export``:
the same fast tokenizer and truncation, the pooling its config names (mean for
all-MiniLM-L6-v2), then L2 normalisation. Texts are sorted by token length
inside a call and batched by ``batch_size``, so a batch pads to similar lengths.

onnxruntime and the tokenizer are imported when the embedder is built, never
at module import (a Celery prefork parent imports the factory, not this).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ingest.embedding.base import batch_size
from ingest.embedding.model import BUNDLED_MODEL_ID, embedding_model_dir
from ingest.embedding.onnx_export import INSTALL_HINT, onnx_model_file
from sirocco.errors import ConfigError
from sirocco.settings import Settings

logger = logging.getLogger(__name__)

#: sentence-transformers pooling flags this adapter computes.
_POOLING_FLAGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}
#: sentence-transformers modules whose effect this adapter reproduces.
_SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}


class OnnxEmbedder:
    """The ``Embedder`` port on ONNX Runtime (CPU); vectors are unit length."""

    def __init__(self, settings: Settings, *, quantized: bool) -> None:
        cfg = settings.embedding
        if cfg.device != "cpu":
            raise ConfigError(
                f"the onnx backends run on the CPU only, not {cfg.device!r}; "
                "set SIROCCO_EMBEDDING__BACKEND=torch to use another device"
            )
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(f"onnxruntime is not installed: {INSTALL_HINT}") from None
        model_dir = embedding_model_dir(settings)
        self._pooling = _pooling_mode(model_dir)
        self._query_prompt, self._document_prompt = _prompts(model_dir)
        model_file = onnx_model_file(settings, quantized=quantized)

        options = ort.SessionOptions()
        if cfg.threads:
            options.intra_op_num_threads = cfg.threads
        # Idle pool threads sleep instead of spinning: the same document batches
        # per second, and concurrent queries (the API's threads) do not burn the
        # cores the other requests and the workers need (docs/benchmarks.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(model_file), options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {i.name for i in self._session.get_inputs()}
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        if not getattr(self._tokenizer, "is_fast", False):
            raise ConfigError(f"{model_dir} has no fast tokenizer (tokenizer.json)")
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        limit = int(config.get("max_position_embeddings") or cfg.max_seq_length)
        self._max_seq_length = min(cfg.max_seq_length, limit)
        self._batch_size = batch_size(settings, "onnx-int8" if quantized else "onnx")
        self._pad_id = int(self._tokenizer.pad_token_id or 0)
        self.dim: int = int(config["hidden_size"])
        self.model_id: str = BUNDLED_MODEL_ID if not cfg.model else str(model_dir.resolve())
        self.model_file: Path = model_file  # its folder name carries the export fingerprint
        logger.info(
            "embedding model loaded",
            extra={"model_id": self.model_id, "dim": self.dim, "onnx": str(model_file),
                   "threads": cfg.threads},
        )

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face fast tokenizer (the chunker counts tokens with it)."""
        return self._tokenizer

    @property
    def max_seq_length(self) -> int:
        """Tokens the model reads per text, special tokens included; the rest is cut."""
        return self._max_seq_length

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order (the model's document prompt, if any)."""
        return self._embed([self._document_prompt + t for t in texts]).tolist()

    def embed_query(self, text: str) -> list[float]:
        """A unit-length vector for a search query (the model's query prompt, if any)."""
        return self._embed([self._query_prompt + text])[0].tolist()

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # sentence-transformers strips texts before tokenizing; so do we, to match it.
        encoded = self._tokenizer(
            [t.strip() for t in texts],
            truncation=True,
            max_length=self._max_seq_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            width = max(len(encoded[i]) for i in rows)
            ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                ids[r, : len(encoded[i])] = encoded[i]
                mask[r, : len(encoded[i])] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._input_names:
                feed["token_type_ids"] = np.zeros_like(ids)
            (hidden,) = self._session.run(["last_hidden_state"], feed)
            out[rows] = _pool(hidden, mask, self._pooling)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def _pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    keep = mask[:, :, None].astype(hidden.dtype)
    match mode:
        case "mean":
            return (hidden * keep).sum(axis=1) / np.maximum(keep.sum(axis=1), 1e-9)
        case "cls":
            return hidden[:, 0]
        case _:  # "max": padding must never win
            return np.where(keep > 0, hidden, -1e9).max(axis=1)


def _pooling_mode(model_dir: Path) -> str:
    """The pooling named by the folder's sentence-transformers config (mean if none)."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return "mean"
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    for kind in kinds:
        if kind not in _SUPPORTED_MODULES:
            raise ConfigError(
                f"{model_dir} has a {kind} module, which the onnx backends do not compute; "
                "set SIROCCO_EMBEDDING__BACKEND=torch"
            )
    mode = "mean"
    for module, kind in zip(modules, kinds, strict=True):
        if kind == "Pooling":
            pooling = json.loads(
                (model_dir / module["path"] / "config.json").read_text(encoding="utf-8")
            )
            on = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True]
            if len(on) != 1 or on[0] not in _POOLING_FLAGS:
                raise ConfigError(
                    f"{model_dir}: pooling {on} is not supported by the onnx backends "
                    f"(valid: one of {sorted(_POOLING_FLAGS.values())}); use backend 'torch'"
                )
            mode = _POOLING_FLAGS[on[0]]
    return mode


def _prompts(model_dir: Path) -> tuple[str, str]:
    """(query prompt, document prompt) as sentence-transformers would prepend them."""
    path = model_dir / "config_sentence_transformers.json"
    prompts: dict[str, str] = {}
    if path.is_file():
        prompts = json.loads(path.read_text(encoding="utf-8")).get("prompts") or {}
    document = next((prompts[k] for k in ("document", "passage", "corpus") if k in prompts), "")
    return prompts.get("query", ""), document
