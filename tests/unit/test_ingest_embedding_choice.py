"""``embedding.backend: auto``: which backend each kind of CPU gets, and the
measured choice on a CPU with native bf16 (measurements are doubles here; the
real candidates run in ``tests/integration/test_ingest_embedding_bf16.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from ingest.embedding import choice
from sirocco.files import read_json
from sirocco.settings import Settings

AVX2 = "flags\t\t: fpu sse2 avx avx2 fma\n"
BF16 = "flags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
UNIT = [1.0, 0.0]


def _settings(tmp_path: Path, **embedding: object) -> Settings:
    return Settings(env="test", data_dir=tmp_path, models_dir=tmp_path / "models",
                    embedding=embedding)


class FakeMeasure:
    """texts/s and the vector each backend gives (the reference is ``torch``)."""

    def __init__(self, speed: dict[str, float], vector: dict[str, list[float]] | None = None,
                 broken: Sequence[str] = ()) -> None:
        self.speed, self.vector, self.broken = speed, vector or {}, broken
        self.calls: list[str] = []

    def __call__(self, settings: Settings, backend: str, texts: Sequence[str]
                 ) -> tuple[list[list[float]], float]:
        self.calls.append(backend)
        if backend in self.broken:
            raise RuntimeError("no kernel")
        return [self.vector.get(backend, UNIT) for _ in texts], self.speed.get(backend, 1.0)


def test_auto_is_the_default_and_an_explicit_backend_is_kept(tmp_path: Path):
    assert Settings().embedding.backend == "auto"
    for backend in ("torch", "torch-bf16", "onnx", "onnx-int8"):
        assert choice.resolve_backend(_settings(tmp_path, backend=backend), BF16) == backend


def test_avx2_cpu_gets_onnx_int8_without_measuring(tmp_path: Path):
    measure = FakeMeasure({"torch-bf16": 1000.0})
    settings = _settings(tmp_path)
    assert choice.choose_backend(settings, measure=measure, cpuinfo=AVX2) == "onnx-int8"
    assert measure.calls == []
    assert not (settings.models_path / choice.VERDICT_FILE).exists()


def test_a_gpu_device_gets_torch(tmp_path: Path):
    assert choice.resolve_backend(_settings(tmp_path, device="cuda"), BF16) == "torch"


def test_bf16_cpu_records_the_faster_candidate_once(tmp_path: Path):
    settings = _settings(tmp_path)
    # Before any measurement a bf16 CPU runs the fallback.
    assert choice.resolve_backend(settings, BF16) == "onnx-int8"
    measure = FakeMeasure({"onnx-int8": 70.0, "torch-bf16": 180.0})
    assert choice.choose_backend(settings, measure=measure, cpuinfo=BF16) == "torch-bf16"
    assert measure.calls == ["torch", "onnx-int8", "torch-bf16"]
    assert choice.resolve_backend(settings, BF16) == "torch-bf16"
    verdict = read_json(settings.models_path / choice.VERDICT_FILE) or {}
    [entry] = verdict.values()
    assert entry["candidates"]["torch-bf16"] == {"texts_per_s": 180.0, "min_cosine": 1.0,
                                                "passes": True}
    # Recorded: a second prepare does not measure again.
    again = FakeMeasure({"onnx-int8": 500.0})
    assert choice.choose_backend(settings, measure=again, cpuinfo=BF16) == "torch-bf16"
    assert again.calls == []


def test_queries_take_onnx_int8_where_documents_take_torch_bf16(tmp_path: Path):
    settings = _settings(tmp_path)
    assert Settings().embedding.query_backend == "auto"
    # No verdict yet, an AVX2 CPU, a GPU: queries follow the documents.
    assert choice.resolve_query_backend(settings, BF16) == "onnx-int8"
    assert choice.resolve_query_backend(settings, AVX2) == "onnx-int8"
    assert choice.resolve_query_backend(_settings(tmp_path, device="cuda"), BF16) == "torch"
    assert choice.resolve_query_backend(_settings(tmp_path, backend="onnx"), BF16) == "onnx"
    # Documents measured faster in bf16: queries still take the int8 graph.
    choice.choose_backend(settings, measure=FakeMeasure({"onnx-int8": 70.0, "torch-bf16": 180.0}),
                          cpuinfo=BF16)
    assert choice.resolve_backend(settings, BF16) == "torch-bf16"
    assert choice.resolve_query_backend(settings, BF16) == "onnx-int8"
    assert choice.resolve_query_backend(_settings(tmp_path, backend="torch-bf16"),
                                        AVX2) == "onnx-int8"
    # An explicit query backend is kept.
    explicit = _settings(tmp_path, query_backend="torch-bf16")
    assert choice.resolve_query_backend(explicit, BF16) == "torch-bf16"


def test_another_machine_signature_does_not_trust_the_record(tmp_path: Path):
    settings = _settings(tmp_path)
    choice.choose_backend(settings, measure=FakeMeasure({"torch-bf16": 9.0}), cpuinfo=BF16)
    other = BF16.replace(" amx_tile", "")
    assert choice.resolve_backend(settings, other) == "onnx-int8"


def test_a_candidate_far_from_fp32_is_not_chosen_however_fast(tmp_path: Path):
    settings = _settings(tmp_path)
    measure = FakeMeasure({"onnx-int8": 70.0, "torch-bf16": 900.0},
                          vector={"torch-bf16": [0.98, 0.19899748]})  # cosine 0.98
    assert choice.choose_backend(settings, measure=measure, cpuinfo=BF16) == "onnx-int8"
    entry = next(iter((read_json(settings.models_path / choice.VERDICT_FILE) or {}).values()))
    assert entry["candidates"]["torch-bf16"]["passes"] is False


def test_a_candidate_that_fails_to_run_is_recorded_with_its_error(tmp_path: Path):
    settings = _settings(tmp_path)
    measure = FakeMeasure({"onnx-int8": 70.0}, broken=["torch-bf16"])
    assert choice.choose_backend(settings, measure=measure, cpuinfo=BF16) == "onnx-int8"
    entry = next(iter((read_json(settings.models_path / choice.VERDICT_FILE) or {}).values()))
    assert entry["candidates"]["torch-bf16"] == {"error": "RuntimeError: no kernel"}


@pytest.mark.parametrize("passing", [[], ["onnx-int8"]])
def test_no_passing_faster_candidate_falls_back_to_onnx_int8(tmp_path: Path, passing: list[str]):
    settings = _settings(tmp_path)
    far = [0.5, 0.8660254]
    vectors = {b: far for b in choice.BF16_CANDIDATES if b not in passing}
    measure = FakeMeasure({"onnx-int8": 1.0, "torch-bf16": 2.0}, vector=vectors)
    assert choice.choose_backend(settings, measure=measure, cpuinfo=BF16) == "onnx-int8"


def test_a_close_call_keeps_onnx_int8(tmp_path: Path):
    # 5 % faster is within the probe's noise: the default stays.
    settings = _settings(tmp_path)
    measure = FakeMeasure({"onnx-int8": 100.0, "torch-bf16": 105.0})
    assert choice.choose_backend(settings, measure=measure, cpuinfo=BF16) == "onnx-int8"


def test_probe_texts_are_a_batch_of_chunk_sized_texts():
    texts = choice.probe_texts()
    assert len(texts) == choice.PROBE_BATCH
    assert all(400 <= len(t) <= 720 for t in texts)
    assert len(set(texts)) == choice.PROBE_BATCH
