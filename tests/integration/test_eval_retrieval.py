"""``sirocco eval retrieval`` as a user runs it, on a small BEIR-format
dataset with the real chunker, embedder and Qdrant local mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_eval_prints_and_writes_metrics_for_every_mode(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIROCCO_")}
    env.update({"SIROCCO_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "160"})
    out = subprocess.run(
        [sys.executable, "-m", "sirocco", "eval", "retrieval", "--dataset",
         str(REPO / "tests" / "data" / "beir-mini"), "--out", str(tmp_path / "eval")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 queries, 10 documents" in out.stdout
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert set(report["modes"]) == {"dense", "sparse", "hybrid"}
    for mode in report["modes"].values():
        assert set(mode["metrics"]) == {"nDCG@10", "R@100", "RR@10"}
        assert mode["metrics"]["R@100"] == 1.0  # every relevant document is found
        assert mode["metrics"]["nDCG@10"] > 0.9
        assert 0 < mode["latency_ms_p50"] <= mode["latency_ms_p95"]
    assert (tmp_path / "eval" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bad = subprocess.run(
        [sys.executable, "-m", "sirocco", "eval", "retrieval", "--dataset", str(tmp_path),
         "--modes", "dense,fuzzy"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300)
    assert bad.returncode != 0 and "unknown mode(s) ['fuzzy']" in bad.stdout + bad.stderr
