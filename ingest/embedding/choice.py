"""Which embedding backend runs here when ``embedding.backend`` is ``auto``.

The fastest backend depends on the CPU. On a CPU without native bf16 (AVX2
only, like AMD Zen 3) ONNX Runtime's int8 graph is the fastest that keeps the
nDCG gate, and bf16 would be emulated (about 5x slower): ``onnx-int8``, no
measurement. On a CPU that computes bf16 natively (AVX-512 BF16, AMX) torch's
oneDNN path may gain more than the int8 graph does, so ``sirocco models
prepare`` measures both there: each candidate must stay close to the model's
fp32 vectors on the probe texts (``MIN_COSINE``); torch-bf16 is recorded when it
passes and is at least ``SWITCH_MARGIN`` times faster, else onnx-int8, in
``embedding-backend.json`` under ``models_path``, keyed by the machine's
signature (kernel flags, torch and onnxruntime versions, model). A
process resolves ``auto`` from that record; without one it takes
``onnx-int8``. A GPU device takes ``torch``.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ingest.embedding.model import embedding_model_dir
from ingest.embedding.onnx_bert import CALIBRATION_TEXTS
from llm.cpu import KERNEL_FLAGS, cpu_flags, cpu_has_native_bf16
from llm.precision import package_version
from sirocco.files import exclusive_lock, read_json, write_json_atomic
from sirocco.settings import Settings

logger = logging.getLogger(__name__)

VERDICT_FILE = "embedding-backend.json"
#: The candidates measured on a CPU with native bf16, the default first.
BF16_CANDIDATES = ("onnx-int8", "torch-bf16")
FALLBACK = "onnx-int8"
#: A candidate's vector of every probe text must keep this cosine to fp32's
#: (onnx-int8's worst on SciFact-like text is about 0.992).
MIN_COSINE = 0.99
#: Another candidate replaces the fallback only when at least this much faster:
#: close calls (within the probe's noise) keep the default, so machines of one
#: kind agree.
SWITCH_MARGIN = 1.1
#: Texts per timed batch and timed rounds (the best round counts).
PROBE_BATCH = 64
PROBE_ROUNDS = 3

Measure = Callable[[Settings, str, Sequence[str]], tuple[list[list[float]], float]]


def machine_signature(settings: Settings, cpuinfo: str | None = None) -> str:
    """What a verdict depends on: architecture, the CPU's kernel flags, the
    torch and onnxruntime versions and the model folder."""
    flags = cpu_flags(cpuinfo) or set()
    kernel = ",".join(sorted(f for f in KERNEL_FLAGS if f in flags)) or "-"
    return (f"{platform.machine()} cpu[{kernel}] torch={package_version('torch')} "
            f"onnxruntime={package_version('onnxruntime')} "
            f"model={embedding_model_dir(settings).name}")


def resolve_backend(settings: Settings, cpuinfo: str | None = None) -> str:
    """The backend this process runs: ``embedding.backend`` unless ``auto``;
    for ``auto`` see the module docstring."""
    cfg = settings.embedding
    if cfg.backend != "auto":
        return cfg.backend
    if cfg.device != "cpu":
        return "torch"
    if not cpu_has_native_bf16(cpuinfo):
        return FALLBACK
    recorded = (read_json(_verdict_path(settings)) or {}).get(machine_signature(settings, cpuinfo))
    if isinstance(recorded, dict) and recorded.get("backend") in BF16_CANDIDATES:
        return str(recorded["backend"])
    return FALLBACK


def resolve_query_backend(settings: Settings, cpuinfo: str | None = None) -> str:
    """The backend this process embeds search queries with: ``embedding.query_backend``
    unless ``auto``; for ``auto``, onnx-int8 where documents resolve to
    torch-bf16 (a single query costs torch several times onnx-int8's time on
    the CPU; the vectors of both stay within ``MIN_COSINE`` of fp32), else the
    document backend."""
    cfg = settings.embedding
    if cfg.query_backend != "auto":
        return cfg.query_backend
    documents = resolve_backend(settings, cpuinfo)
    return FALLBACK if documents == "torch-bf16" else documents


def choose_backend(settings: Settings, *, measure: Measure | None = None,
                   cpuinfo: str | None = None) -> str:
    """``resolve_backend``, after measuring the candidates where ``auto`` on a
    native-bf16 CPU has no verdict for this machine yet (``sirocco models
    prepare``). The verdict, with each candidate's figures, is recorded."""
    cfg = settings.embedding
    if cfg.backend != "auto" or cfg.device != "cpu" or not cpu_has_native_bf16(cpuinfo):
        return resolve_backend(settings, cpuinfo)
    path, signature = _verdict_path(settings), machine_signature(settings, cpuinfo)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_name(f".{VERDICT_FILE}.lock")):
        verdicts = read_json(path) or {}
        if signature not in verdicts:
            verdicts[signature] = _measure_all(settings, measure or _measure)
            write_json_atomic(path, verdicts)
            logger.info("embedding backend chosen", extra={"signature": signature,
                                                            **verdicts[signature]})
    return resolve_backend(settings, cpuinfo)


def probe_texts() -> list[str]:
    """``PROBE_BATCH`` texts of a few hundred characters, as chunks are."""
    texts = list(CALIBRATION_TEXTS)
    out = []
    for i in range(PROBE_BATCH):
        rotated = texts[i % len(texts):] + texts[:i % len(texts)]
        out.append(" ".join(rotated)[: 400 + 5 * i])
    return out


def _measure_all(settings: Settings, measure: Measure) -> dict[str, Any]:
    texts = probe_texts()
    reference, _ = measure(settings, "torch", texts)
    figures: dict[str, Any] = {}
    for name in BF16_CANDIDATES:
        try:
            vectors, per_s = measure(settings, name, texts)
        except Exception as exc:  # a candidate that cannot run is simply not chosen
            logger.warning("embedding backend candidate failed", exc_info=True)
            figures[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        worst = min(sum(a * b for a, b in zip(v, r, strict=True))
                    for v, r in zip(vectors, reference, strict=True))
        figures[name] = {"texts_per_s": round(per_s, 1), "min_cosine": round(worst, 5),
                         "passes": worst >= MIN_COSINE}
    int8, bf16 = (figures[name] for name in BF16_CANDIDATES)
    faster = not int8.get("passes") or (
        bf16.get("passes") and bf16["texts_per_s"] >= SWITCH_MARGIN * int8["texts_per_s"])
    best = "torch-bf16" if bf16.get("passes") and faster else FALLBACK
    return {"backend": best, "candidates": figures, "measured_at": time.time()}


def _measure(settings: Settings, backend: str, texts: Sequence[str]
             ) -> tuple[list[list[float]], float]:
    """Vectors of ``texts`` with ``backend``, and its best texts/s over the rounds."""
    from ingest.embedding.base import create_embedder

    embedding = settings.embedding.model_copy(update={"backend": backend})
    embedder = create_embedder(settings.model_copy(update={"embedding": embedding}))
    vectors = embedder.embed_documents(texts[:8])  # warm-up
    best = 0.0
    for _ in range(PROBE_ROUNDS):
        started = time.perf_counter()
        vectors = embedder.embed_documents(texts)
        best = max(best, len(texts) / (time.perf_counter() - started))
    return vectors, best


def _verdict_path(settings: Settings) -> Path:
    return settings.models_path / VERDICT_FILE
