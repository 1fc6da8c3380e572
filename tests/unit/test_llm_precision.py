"""Which dtype the engine serves: CPU flags, the reference comparison, the
prepare-time check's choice and record, and ``llm.dtype: auto``'s resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm.cpu import cpu_has_native_bf16, on_cpu
from llm.model_check import (
    TIE_MARGIN,
    check_bundled,
    compare_greedy,
    require_served_dtype,
    served_dtype,
)
from llm.precision import dtype_candidates, machine_signature, resolve_dtype
from sirocco.errors import ConfigError, ModelCheckError
from sirocco.settings import LLMSettings, Settings

EPYC = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"

REFERENCE = {
    "prompts": ["capital?", "sum?"],
    "new_tokens": 4,
    "prompt_ids": [[1, 2], [3]],
    "token_ids": [[10, 11, 12, 13], [20, 21, 22, 23]],
    # Token 2 of the first answer is a near-tie; everything else is clear.
    "margins": [[3.0, TIE_MARGIN / 2, 2.0, 2.0], [0.08, 1.0, 1.0, 1.0]],
}


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    assert not cpu_has_native_bf16(EPYC)
    assert cpu_has_native_bf16(SAPPHIRE) and cpu_has_native_bf16(GRAVITON)
    assert dtype_candidates(cpu=True, native_bf16=False) == ["float32"]
    assert dtype_candidates(cpu=True, native_bf16=True) == ["bfloat16", "float32"]
    assert dtype_candidates(cpu=False, native_bf16=False) == ["bfloat16", "float32"]


def test_machine_signature_tells_the_two_cpu_kinds_apart() -> None:
    amd, intel = machine_signature(cpu=True, cpuinfo=EPYC), machine_signature(
        cpu=True, cpuinfo=SAPPHIRE)
    assert amd != intel
    assert "amx_bf16" in intel and "amx_bf16" not in amd
    assert "vllm=" in amd and "torch=" in amd


def test_equal_answers_pass() -> None:
    assert compare_greedy(REFERENCE, REFERENCE["token_ids"]) == (True, "equal")


def test_a_flip_at_a_clear_gap_fails_and_says_where() -> None:
    # The bf16 failure on a Xeon: the first token of "the capital" answer flips
    # where the reference's top-2 gap is 0.08 logits, far above float32 noise.
    ok, detail = compare_greedy(REFERENCE, [[10, 11, 12, 13], [99, 21, 22, 23]])
    assert not ok
    assert "prompt 2 ('sum?') differs at token 1" in detail
    assert "gap 0.080" in detail


def test_a_flip_at_a_near_tie_is_forgiven_and_reported() -> None:
    ok, detail = compare_greedy(REFERENCE, [[10, 77, 78, 79], [20, 21, 22, 23]])
    assert ok
    assert "differs at token 2" in detail and "a tie" in detail


def test_a_short_answer_fails() -> None:
    ok, detail = compare_greedy(REFERENCE, [[10, 11], [20, 21, 22, 23]])
    assert not ok and "token 3" in detail


class FakeRunner:
    """vLLM stand-in: the reference answers in the dtypes listed, a clear flip in others."""

    def __init__(self, faithful: set[str]) -> None:
        self.faithful = faithful
        self.calls: list[tuple[str, str]] = []

    def __call__(self, model_dir: Path, dtype: str, prompt_ids, new_tokens: int):
        self.calls.append((model_dir.name, dtype))
        answers = [list(a) for a in REFERENCE["token_ids"]]
        if dtype not in self.faithful:
            answers[1][0] = 99
        return answers


def test_check_picks_the_first_faithful_dtype_and_records_it(tmp_path: Path) -> None:
    runner = FakeRunner({"float32"})
    models = {"mistral": tmp_path / "m", "mixtral": tmp_path / "x"}
    got = check_bundled(tmp_path, models, REFERENCE, signature="intel",
                        candidates=["bfloat16", "float32"], runner=runner)
    assert got == {"mistral": "float32", "mixtral": "float32"}
    assert runner.calls == [("m", "bfloat16"), ("m", "float32"),
                            ("x", "bfloat16"), ("x", "float32")]
    assert served_dtype(tmp_path, "mistral", "intel") == "float32"
    # Recorded: a second call runs nothing.
    check_bundled(tmp_path, models, REFERENCE, signature="intel",
                  candidates=["bfloat16", "float32"], runner=runner)
    assert len(runner.calls) == 4
    # Another machine's verdict is not trusted here.
    assert served_dtype(tmp_path, "mistral", "amd") is None


def test_check_fails_loudly_when_no_dtype_gives_the_reference(tmp_path: Path) -> None:
    with pytest.raises(ModelCheckError) as err:
        check_bundled(tmp_path, {"mistral": tmp_path / "m"}, REFERENCE, signature="amd",
                      candidates=["float32"], runner=FakeRunner(set()))
    message = str(err.value)
    assert "bundled mistral checkpoint does not give its reference answers" in message
    assert "float32: prompt 2 ('sum?') differs at token 1" in message
    assert served_dtype(tmp_path, "mistral", "amd") is None


def _settings(tmp_path: Path, **llm) -> Settings:
    return Settings(env="test", data_dir=tmp_path, llm=LLMSettings(**llm))


def test_auto_on_a_bundled_model_is_the_checked_dtype(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with pytest.raises(ConfigError, match="sirocco models prepare"):
        resolve_dtype(settings)
    settings.models_path.mkdir(parents=True)
    check_bundled(settings.models_path, {"mistral": tmp_path / "m"}, REFERENCE,
                  signature=machine_signature(cpu=on_cpu()), candidates=["float32"],
                  runner=FakeRunner({"float32"}))
    assert resolve_dtype(settings) == "float32"
    assert require_served_dtype(settings.models_path, "mistral",
                                machine_signature(cpu=on_cpu())) == "float32"
    # The Mixtral checkpoint was not checked: refused, not guessed.
    with pytest.raises(ConfigError, match="bundled mixtral model has not been checked"):
        resolve_dtype(_settings(tmp_path, bundled="mixtral"))


def test_an_explicit_dtype_wins_and_other_models_keep_vllms_auto(tmp_path: Path) -> None:
    assert resolve_dtype(_settings(tmp_path, dtype="bfloat16")) == "bfloat16"
    other = resolve_dtype(_settings(tmp_path, model="mistralai/Mistral-7B-Instruct-v0.3"))
    emulated = on_cpu() and not cpu_has_native_bf16()
    assert other == ("float32" if emulated else "auto")
