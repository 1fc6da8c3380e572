"""The admin's CLI path, each command a real process: ``sirocco sources
add/list/sync/remove`` and ``sirocco jobs list/show/retry/cancel`` against
SQLite, Redis and a real worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.workerutil import REDIS_URL, purge_queue, redis_or_skip, start_worker
from tests.integration.workerutil import stop_worker as _stop_worker

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_sources_and_jobs_from_the_command_line(tmp_path: Path):
    redis_or_skip()
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIROCCO_")}
    env.update({"SIROCCO_ENV": "test", "SIROCCO_DATA_DIR": str(tmp_path / "var"),
                "SIROCCO_REDIS_URL": REDIS_URL, "SIROCCO_CELERY__QUEUE_PREFIX": prefix,
                "SIROCCO_QDRANT__PATH": str(tmp_path / "qdrant"), "COLUMNS": "200"})

    def cli(*args: str, ok: bool = True) -> str:
        out = subprocess.run([sys.executable, "-m", "sirocco", *args], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
        text = out.stdout + out.stderr
        assert (out.returncode == 0) == ok, f"{args}: rc={out.returncode}\n{text}"
        return text

    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "leave.md").write_text("# Leave\n\nEmployees get 27 days of paid leave.\n")
    (folder / "travel.txt").write_text("Book trains for trips under 600 km.\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\nnot really a pdf")

    assert "source handbook" in cli("sources", "add", str(folder))
    assert "exists already" in cli("sources", "add", str(folder), ok=False)
    cli("db", "upgrade")
    log = tmp_path / "worker.log"
    worker = start_worker(env, prefix, log)
    try:
        # The sync waits for the job; one file is bad, so the exit code says so.
        out = cli("sources", "sync", "handbook", "--timeout", "240", ok=False)
        job_id = re.search(r"job (\S+): 3 queued", out).group(1)
        assert "broken.pdf" in out and "corrupt PDF" in out
        assert re.search(rf"job {job_id}: done", out)

        listed = cli("jobs", "list")
        assert re.search(rf"{job_id}\s+sync\s+done\s+3/3\s+failed 1", listed), listed
        shown = cli("jobs", "show", job_id)
        assert "done 2, failed 1" in shown and "corrupt PDF" in shown
        assert "3 docs" in cli("sources", "list")

        # Replace the bad file: the re-sync indexes the new one, removes the old one.
        (folder / "broken.pdf").unlink()
        (folder / "broken.md").write_text("fixed")
        out = cli("sources", "sync", "handbook", "--timeout", "240")
        assert re.search(r": 1 queued, 2 skipped, 1 removed", out), out
        assert "re-queued 0 item(s)" in cli("jobs", "retry", job_id)  # its document is gone
        assert "cancelled 0 queued item(s)" in cli("jobs", "cancel", job_id)
        # Narrowed at once: no re-ingest, the next sync finds nothing to do.
        out = cli("sources", "access", "handbook", "--group", "hr")
        assert "handbook: 3 document(s) now visible to group:hr" in out, out
        out = cli("sources", "sync", "handbook", "--timeout", "240")
        assert re.search(r": 0 queued, 3 skipped", out), out
    finally:
        _stop_worker(worker)
        purge_queue(prefix)
    assert "removed handbook and 3 document(s)" in cli("sources", "remove", "handbook")
    assert "handbook" not in cli("sources", "list")
