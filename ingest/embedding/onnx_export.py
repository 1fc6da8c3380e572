"""ONNX exports of the embedding model, built once and cached under ``models_path``.

The model folder (by default the bundled all-MiniLM-L6-v2) is exported into
``<models_path>/embeddings/<name>-<fingerprint>/``:

- ``model.onnx``: the transformer, fp32; input ids, attention mask (and token
  type ids when the model has them) in, ``last_hidden_state`` out. A BERT
  (the bundled model is one) is written directly in onnxruntime's fused
  operators by ``ingest.embedding.onnx_bert``; any other architecture is traced with the
  ``torch.onnx`` exporter, then given onnxruntime's transformer fusions
  (SkipLayerNormalization, BiasGelu). Pooling and normalisation stay outside
  the graph, in ``ingest.embedding.onnx``.
- ``model.int8.onnx``: the same graph with int8 weights (dynamic quantization).

The fingerprint covers the recipe version and the model folder (path, weight
files' sizes and mtimes), so a changed model or recipe gets a fresh export.
Files are written under a temporary name and renamed into place, under an
``fcntl`` lock: two workers preparing at once export once, and a crash never
leaves a half-written model where a reader would take it.

torch, transformers, onnx and onnxruntime are imported only while exporting
(torch only for a model that is not a BERT).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

from ingest.embedding import onnx_bert
from ingest.embedding.base import VALID_BACKENDS
from ingest.embedding.choice import choose_backend, resolve_query_backend
from ingest.embedding.model import embedding_model_dir
from sirocco.errors import ConfigError
from sirocco.files import build_atomic, exclusive_lock
from sirocco.settings import Settings

logger = logging.getLogger(__name__)

#: Bump when the exported graphs change, so cached exports are rebuilt.
#: 5: int8 weights in 7 bits (reduce_range), for CPUs without VNNI.
RECIPE_VERSION = 5
#: ONNX opset of the export (the dynamo exporter's own; no version conversion).
OPSET = 18
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INSTALL_HINT = (
    "`pip install onnxruntime onnx onnxscript` (or set SIROCCO_EMBEDDING__BACKEND=torch)"
)


def prepare_embedding_model(settings: Settings) -> Path | None:
    """Build (or reuse) the model file the configured embedding backend loads,
    and the query backend's (``embedding.query_backend``) where that differs.

    Returns its path, or None for the torch backends, which load the model
    folder themselves. For ``auto`` the backend is chosen first, measured on
    this machine where its CPU has native bf16 (``ingest.embedding.choice``).
    Safe to call from several processes at once.
    """
    cfg = settings.embedding
    if cfg.backend == "auto" and cfg.device == "cpu":
        # The fallback, and a candidate the choice measures.
        onnx_model_file(settings, quantized=True)
    documents = choose_backend(settings)
    # The query embedder (the API's) may run another backend: its export is
    # built here too, not on the API's start.
    queries = resolve_query_backend(settings)
    if queries != documents:
        _model_file(settings, queries)
    return _model_file(settings, documents)


def _model_file(settings: Settings, backend: str) -> Path | None:
    match backend:
        case "torch" | "torch-bf16":
            return None
        case "onnx":
            return onnx_model_file(settings, quantized=False)
        case "onnx-int8":
            return onnx_model_file(settings, quantized=True)
        case other:
            raise ConfigError(f"unknown embedding backend {other!r}; valid: {VALID_BACKENDS}")


def onnx_model_file(settings: Settings, *, quantized: bool) -> Path:
    """The cached ONNX export of the configured model (int8 if ``quantized``).

    Exports (and quantizes) on first use, which takes some 20 s on 2 cores;
    later calls only check that the file is there.
    """
    model_dir = embedding_model_dir(settings)
    out = settings.models_path / "embeddings" / _cache_name(settings, model_dir)
    target = out / (INT8_FILE if quantized else FP32_FILE)
    if target.is_file():
        return target
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out / ".lock"):
        # Another process may have finished while this one waited for the lock.
        fp32 = out / FP32_FILE
        if not fp32.is_file():
            build_atomic(fp32, lambda tmp: _export_fp32(model_dir, tmp))
        if quantized and not target.is_file():
            build_atomic(target, lambda tmp: quantize_int8(fp32, tmp))
    return target


def export_onnx(model_dir: Path, dest: Path) -> None:
    """Write the fp32 ONNX graph of the transformer in ``model_dir`` to ``dest``.

    Batch and sequence axes are dynamic; the graph computes what the model's
    ``last_hidden_state`` is in torch (to about 1e-5).
    """
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise ConfigError(f"cannot export to ONNX ({exc.name} missing): {INSTALL_HINT}") from None

    started = time.monotonic()
    # Eager attention: the graph exported from the sdpa path ran ~15 % slower in
    # onnxruntime on the 2-core CPU.
    model = AutoModel.from_pretrained(
        str(model_dir), local_files_only=True, attn_implementation="eager"
    ).eval()
    input_names = ["input_ids", "attention_mask"]
    if getattr(model.config, "type_vocab_size", 0):
        input_names.append("token_type_ids")

    class HiddenStates(torch.nn.Module):
        # Keyword arguments: transformers 5 models take extra positional parameters.
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra)
            return out.last_hidden_state

    # Sample shapes above 1 so the exporter does not specialise an axis to 1.
    sample = torch.full((2, 8), 1000, dtype=torch.long)
    mask = torch.ones_like(sample)
    mask[1, 5:] = 0
    args = {"input_ids": sample, "attention_mask": mask, "token_type_ids": torch.zeros_like(sample)}
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    # The legacy TorchScript exporter (dynamo=False) is no use here: tracing bakes
    # transformers 5's attention-mask construction into constants, and padded
    # batches come out wrong. The dynamo exporter keeps it symbolic.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed", four times
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                HiddenStates(model),
                tuple(args[name] for name in input_names),
                str(dest),
                input_names=input_names,
                output_names=["last_hidden_state"],
                dynamic_shapes={name: {0: batch, 1: seq} for name in input_names},
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    logger.info(
        "embedding model exported to ONNX",
        extra={"model_dir": str(model_dir), "seconds": round(time.monotonic() - started, 1)},
    )


def fuse_transformer(src: Path, dest: Path, *, num_heads: int, hidden_size: int) -> None:
    """Write ``src`` with onnxruntime's transformer fusions applied to ``dest``.

    LayerNorm + residual become SkipLayerNormalization and bias + GELU become
    BiasGelu (the exported graph spells GELU out as Div/Erf/Add/Mul/Mul, which
    the runtime leaves alone once the MatMuls before it are quantized): 12 % less
    time per int8 batch on the 2-core CPU. The output is the same to 1e-5.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(
        str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
        opt_level=1, use_gpu=False,
    )
    model.save_model_to_file(str(dest))
    logger.info(
        "embedding model fused", extra={"fused": model.get_fused_operator_statistics()}
    )


def quantize_int8(src: Path, dest: Path) -> None:
    """Write ``src`` with int8 weights to ``dest`` (dynamic quantization).

    Quantized: every MatMul by a weight and every fused ``Attention`` (as
    ``QAttention``), with per-channel weight scales; activations are quantized
    per batch at run time. Kept fp32: activation-by-activation MatMuls, the
    outlier-channel side MatMuls of ``ingest.embedding.onnx_bert``, and, in a traced graph
    (which has no outlier split), the FFN down-projections of the first half of
    the layers. The quality gate is retrieval: SciFact nDCG@10 within 0.005 of
    torch fp32 (bench/embed_quality.py).
    """
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ConfigError(f"cannot quantize ({exc.name} missing): {INSTALL_HINT}") from None

    graph = onnx.load(str(src), load_external_data=False).graph
    weights = {t.name: t for t in graph.initializer}
    fused = any(node.op_type == "Attention" for node in graph.node)
    keep_fp32: list[str] = []
    down_projections: list[str] = []  # in graph order, which is layer order
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weight = weights.get(node.input[1]) if len(node.input) == 2 else None
        if weight is None or node.name.endswith(onnx_bert.OUTLIER_NODE_SUFFIXES):
            keep_fp32.append(node.name)
        elif len(weight.dims) == 2 and weight.dims[0] > weight.dims[1]:
            down_projections.append(node.name)
    if not fused:
        # A traced graph keeps its outlier channels inside the FFN: the per-batch
        # activation scale of the down-projections is set by a few [CLS] values
        # 4-5x the rest (see ingest.embedding.onnx_bert). Measured one layer at a time on
        # 256 SciFact abstracts, layers 0-2 int8 cost 0.0005-0.0012 of mean cosine
        # to fp32 each, layers 3-5 0.0001 each; all six int8 moved SciFact
        # nDCG@10 by +0.0072 (outside the gate).
        keep_fp32 += down_projections[: (len(down_projections) + 1) // 2]
    # Per-channel weight scales: mean cosine to fp32 on SciFact abstracts 0.9966,
    # against 0.9958 per tensor (and 0.936 per tensor with everything quantized).
    # 7-bit weights (reduce_range): on a CPU without VNNI (AVX2 only) ONNX
    # Runtime multiplies u8 activations by s8 weights with VPMADDUBSW, whose
    # 16-bit pair sums saturate with 8-bit weights; a Zen 3 EPYC gave a cosine
    # of 0.978 to torch on one test text (0.992 with 7 bits).
    quantize_dynamic(
        str(src),
        str(dest),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        op_types_to_quantize=["MatMul", "Attention"] if fused else ["MatMul"],
        nodes_to_exclude=keep_fp32,
        # The contrib operators' outputs have no inferred type; they are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    logger.info("embedding model quantized to int8", extra={"path": str(dest)})


# ------------------------------------------------------------------------- internals


def _export_fp32(model_dir: Path, dest: Path) -> None:
    """Write the fp32 graph: built from the weights for a BERT, else traced and fused."""
    reason = onnx_bert.supports(model_dir)
    if reason is None:
        try:
            _build_bert(model_dir, dest)
            return
        except Exception:  # noqa: BLE001 - the traced export below still works
            logger.warning("building the BERT graph failed; tracing the model instead",
                           exc_info=True)
    else:
        logger.info("embedding model traced with torch.onnx", extra={"why": reason})
    _export_fused(model_dir, dest)


def _build_bert(model_dir: Path, dest: Path) -> None:
    try:
        import onnx
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise ConfigError(f"cannot export to ONNX ({exc.name} missing): {INSTALL_HINT}") from None
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model, outliers = onnx_bert.build_bert_graph(model_dir, tokenizer)
    onnx.save(model, str(dest))
    logger.info(
        "embedding model exported to ONNX",
        extra={"model_dir": str(model_dir), "built": "bert", "outlier_channels": outliers,
               "seconds": round(time.monotonic() - started, 1)},
    )


def _export_fused(model_dir: Path, dest: Path) -> None:
    """Export to ``dest``, then fuse it in place; the plain export if fusing fails."""
    export_onnx(model_dir, dest)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    plain = dest.with_name(dest.name + ".plain")
    os.replace(dest, plain)
    try:
        fuse_transformer(
            plain, dest,
            num_heads=int(config.get("num_attention_heads", 0)),
            hidden_size=int(config.get("hidden_size", 0)),
        )
    except Exception:  # noqa: BLE001 - an optimisation only: keep the plain graph
        logger.warning("transformer fusion failed; using the plain export", exc_info=True)
        os.replace(plain, dest)
    finally:
        plain.unlink(missing_ok=True)


def _cache_name(settings: Settings, model_dir: Path) -> str:
    digest = hashlib.sha256(f"{RECIPE_VERSION}|{OPSET}|{model_dir.resolve()}".encode())
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and path.suffix in {".safetensors", ".bin", ".json"}:
            stat = path.stat()
            digest.update(f"|{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    name = model_dir.name if settings.embedding.model else "all-MiniLM-L6-v2"
    return f"{name}-{digest.hexdigest()[:12]}"
