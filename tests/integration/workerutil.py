"""Shared helpers of the worker tests: start and stop a real Celery worker
process, reach Redis, wait for documents."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

import ingest.models  # noqa: F401  (tables on Base)
from ingest.models import Document
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.settings import Settings
from tests.support import require_service

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/13"  # a database number kept for these tests


def redis_or_skip() -> None:
    """Skip (fail in CI) when the test Redis does not answer."""
    require_service("Redis", REDIS_URL, 6379)


def start_worker(env: dict[str, str], prefix: str, log: Path,
                 stages: list[str] | None = None) -> subprocess.Popen:
    """A worker process (concurrency 1) on the queues of ``stages`` (default:
    every queue) of ``prefix`` (``SIROCCO_CELERY__QUEUE_PREFIX``), otherwise
    configured by ``env``."""
    code = (
        "from sirocco.settings import get_settings; from workers.app import run_worker; "
        f"run_worker(get_settings(), loglevel='info', concurrency=1, stages={stages!r})"
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
    r.delete(*r.keys(f"*{prefix}*"), f"{prefix}.parse", f"{prefix}.embed", f"{prefix}.exports")


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


@dataclass
class WorkerStack:
    """What a worker test shares with its worker process: the same database,
    Qdrant folder, collection and queues, as ``Settings`` here and as
    ``SIROCCO_*`` variables there."""

    settings: Settings
    env: dict[str, str]
    prefix: str
    engine: Engine
    factory: sessionmaker[Session]

    def close(self) -> None:
        self.engine.dispose()
        if self.settings.redis.url:
            purge_queue(self.prefix)


def database_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh schema in SIROCCO_TEST_DATABASE_URL (PostgreSQL), else SQLite in tmp_path."""
    if os.environ.get("SIROCCO_TEST_DATABASE_URL"):
        return request.getfixturevalue("postgres_schema_url")
    return f"sqlite:///{tmp_path / 'sirocco.db'}"


def worker_stack(tmp_path: Path, url: str, *, name: str, redis: bool = True,
                 worker_env: dict[str, str] | None = None) -> WorkerStack:
    """Tables created, a unique queue prefix and collection; ``worker_env`` goes
    to the worker process only."""
    prefix, collection = f"{name}-{uuid.uuid4().hex[:8]}", f"it_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIROCCO_")}
    env.update({"SIROCCO_ENV": "test", "SIROCCO_DATA_DIR": str(tmp_path / "var"),
                "SIROCCO_DATABASE_URL": url, "SIROCCO_QDRANT__PATH": str(tmp_path / "qdrant"),
                "SIROCCO_QDRANT__COLLECTION": collection, **(worker_env or {})})
    if redis:
        env["SIROCCO_REDIS_URL"] = REDIS_URL
    settings = Settings(env="test", data_dir=tmp_path / "var", db={"url": url},
                        redis={"url": REDIS_URL if redis else None},
                        qdrant={"path": str(tmp_path / "qdrant"), "collection": collection},
                        celery={"queue_prefix": prefix})
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    return WorkerStack(settings, env, prefix, engine, make_session_factory(engine))
