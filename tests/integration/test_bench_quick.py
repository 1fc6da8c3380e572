"""Every benchmark's ``--quick`` mode runs to its ratio line on this machine.

The benchmarks are not timed tests: these only prove that each script runs
end to end, its peers included, in the dtype and on the backends this machine
resolves (a bf16 CPU once crashed ``bench/engine.py`` before its first figure).
``--quick`` uses tiny sizes and the 10-document fixture in ``tests/data``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import unavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]

#: script -> a line its report ends with (the comparison with its peer).
BENCHES = {
    "engine_smoke.py": "ratio vllm/transformers:",
    "engine.py": "2nd-question TTFT off/on:",
    "ingest.py": "sirocco / langchain pipeline",
    "retrieval.py": "hybrid p50 / langchain dense p50:",
    "embed_quality.py": "quality gate",
    "embed_batch.py": "of batch 64",
    "served.py": "ratio served/in-process",
    "store_scale.py": "local served p50 / edge socket p50:",
    "served_ingest.py": "served (embedded default) / in-process docs/s:",
}


@pytest.mark.parametrize("script", sorted(BENCHES))
def test_quick_mode_reports_its_ratios(script: str, prepared_models) -> None:
    if importlib.util.find_spec("langchain_qdrant") is None:
        unavailable("the benchmarks' peers are not installed: pip install -e '.[bench]'")
    proc = subprocess.run([sys.executable, f"bench/{script}", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=1100, check=False,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert BENCHES[script] in proc.stdout, proc.stdout[-4000:]
