"""Shared helpers of the worker tests: start and stop a real Celery worker
process, reach Redis, wait for documents."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from ingest.models import Document
from sirocco.db import session_scope
from tests.support import require_service

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/13"  # a database number kept for these tests


def redis_or_skip() -> None:
    """Skip (fail in CI) when the test Redis does not answer."""
    require_service("Redis", REDIS_URL, 6379)


def start_worker(env: dict[str, str], prefix: str, log: Path) -> subprocess.Popen:
    """A worker process (concurrency 1) on both queues of ``prefix``
    (``SIROCCO_CELERY__QUEUE_PREFIX``), otherwise configured by ``env``."""
    code = (
        "from sirocco.settings import get_settings; from workers.app import run_worker; "
        "run_worker(get_settings(), loglevel='info', concurrency=1)"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO,
        env={**env, "SIROCCO_CELERY__QUEUE_PREFIX": prefix}, stdout=log.open("a"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen) -> None:
    """Warm shutdown, then kill the process group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and its pool children
            proc.wait(timeout=10)


def purge_queue(prefix: str) -> None:
    """Delete the Redis queues of ``prefix`` and kombu's binding keys."""
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    r.delete(*r.keys(f"*{prefix}*"), f"{prefix}.parse", f"{prefix}.embed")


def wait_for(factory, ids: list[str], proc, log: Path, timeout: float = 300
             ) -> dict[str, Document]:
    """The documents once all are done or failed; fails the test with the log tail."""
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(factory) as s:
            docs = {d.id: d for d in s.scalars(select(Document).where(Document.id.in_(ids)))}
        if all(d.status in ("done", "failed") for d in docs.values()):
            return docs
        if proc.poll() is not None or time.monotonic() > deadline:
            states = {Path(d.source_path).name: d.status for d in docs.values()}
            pytest.fail(f"worker did not finish (rc={proc.poll()}): {states}\n"
                        f"{log.read_text()[-4000:]}")
        time.sleep(0.5)
