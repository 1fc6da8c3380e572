"""The CPU as vLLM's CPU backend sees it: feature flags (native bf16?), and
the knobs that only exist as environment variables (OpenMP thread binding,
reserved cores), set around an engine's start. Apart from the engine adapter,
which stays about serving."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from sirocco.settings import Settings

# x86 (/proc/cpuinfo "flags") and Arm ("Features") names of native bf16 support.
CPU_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
#: Flags that change which kernels vLLM/oneDNN pick; part of the check's key.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16", "asimd")


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The CPU's feature flags (x86 "flags", Arm "Features"); None where
    ``/proc/cpuinfo`` cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    return flags


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively (``/proc/cpuinfo`` flags on x86,
    Features on Arm; True where there is no such file or no flags line)."""
    flags = cpu_flags(cpuinfo)
    return not flags or any(f in flags for f in CPU_NATIVE_BF16_FLAGS)


def on_cpu() -> bool:
    """Whether vLLM runs on the CPU platform here (imports vllm.platforms)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def cpu_thread_binding(ranks: int, cpus: Sequence[int], numa_nodes: int) -> str | None:
    """A ``VLLM_CPU_OMP_THREADS_BIND`` value giving each of ``ranks`` ranks its own
    share of ``cpus``, or None where vLLM's "auto" copes (a NUMA node per rank).

    vLLM's auto binding asserts one NUMA node per rank, so on a one-node machine
    TP=2 does not start without an explicit binding.
    """
    if ranks <= 1 or numa_nodes >= ranks:
        return None
    cpus = sorted(cpus)
    if len(cpus) < ranks:  # oversubscribed (a test of TP=3 on 2 cores): ranks share cores
        return "|".join(str(cpus[rank % len(cpus)]) for rank in range(ranks))
    per = len(cpus) // ranks
    parts = []
    for rank in range(ranks):
        mine = cpus[rank * per:(rank + 1) * per]
        contiguous = mine == list(range(mine[0], mine[-1] + 1))
        parts.append(f"{mine[0]}-{mine[-1]}" if contiguous and len(mine) > 1
                     else ",".join(map(str, mine)))
    return "|".join(parts)


@contextlib.contextmanager
def cpu_environment(settings: Settings) -> Iterator[None]:
    """vLLM's CPU knobs that only exist as environment variables, set while the
    engine starts (its processes inherit them) and restored afterwards, so a
    later engine in this process gets its own; an exported variable wins."""
    llm = settings.llm
    wanted: dict[str, str] = {}
    if on_cpu():
        if llm.cpu_reserved_cores is not None:
            wanted["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(llm.cpu_reserved_cores)
        binding = llm.cpu_omp_threads_bind
        if binding is None:
            numa = len(list(Path("/sys/devices/system/node").glob("node[0-9]*"))) or 1
            binding = cpu_thread_binding(llm.tensor_parallel_size,
                                         sorted(os.sched_getaffinity(0)), numa)
        if binding is not None:
            wanted["VLLM_CPU_OMP_THREADS_BIND"] = binding
    added = [name for name in wanted if name not in os.environ]
    for name in added:
        os.environ[name] = wanted[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)
