"""One real path from a document to a cited answer.

PostgreSQL (a throw-away schema), Redis as the Celery broker, a real worker
process started through the CLI, Qdrant local mode, all-MiniLM-L6-v2 and the
vLLM CPU engine serving the bundled Mistral-architecture model. Nothing here
is a double.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from ingest.models import Document
from sirocco.db import make_engine, make_session_factory, upgrade_database
from sirocco.settings import Settings
from tests.integration.workerutil import stop_worker
from traces.models import Trace

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

ZEPHYR = """# Project Zephyr

Project Zephyr moves order processing from the mainframe to the new platform.

## Identification

The Zephyr project code is ZX-4471. Use this code on every timesheet entry.
"""
DISTRACTORS = {
    "travel.md": "# Travel policy\n\nHotels are reimbursed up to 180 EUR per night. "
    "Expense reports are due within 30 days.\n",
    "security.txt": "Security handbook\n\nPasswords must be at least 14 characters long. "
    "Laptops lock after 5 minutes.\n",
}


def _sse_events(body: str) -> list[dict | str]:
    events: list[dict | str] = []
    for frame in body.split("\n\n"):
        if frame.startswith("data: "):
            data = frame[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


@pytest.fixture()
def stack_env(tmp_path: Path, postgres_schema_url: str, redis_url: str) -> dict[str, str]:
    """SIROCCO_* variables for the worker and CLI processes of this test."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()  # no messages left by an earlier run
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIROCCO_")}
    env.update(
        {
            "SIROCCO_ENV": "test",
            "SIROCCO_DATA_DIR": str(tmp_path / "var"),
            "SIROCCO_DATABASE_URL": postgres_schema_url,
            "SIROCCO_REDIS_URL": redis_url,
            "SIROCCO_QDRANT__PATH": str(tmp_path / "qdrant"),
        }
    )
    return env


@pytest.fixture()
def worker(stack_env: dict[str, str], tmp_path: Path):
    log = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sirocco", "worker"],
        cwd=REPO,
        env=stack_env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield proc, log
    stop_worker(proc)


async def test_chat_answer_cites_the_ingested_document(
    tmp_path, stack_env, worker, vllm_engine, engine_settings
):
    from api.app import create_app
    from api.services import Services
    from assistant.service import Assistant
    from ingest.embedding.st import SentenceTransformerEmbedder
    from ingest.service import register_files
    from retrieval.factory import create_store
    from traces.recorder import TraceRecorder
    from workers.app import create_celery
    from workers.tasks import enqueue_documents

    proc, log = worker
    settings = Settings(
        env="test",
        data_dir=Path(stack_env["SIROCCO_DATA_DIR"]),
        db={"url": stack_env["SIROCCO_DATABASE_URL"]},
        redis={"url": stack_env["SIROCCO_REDIS_URL"]},
        qdrant={"path": stack_env["SIROCCO_QDRANT__PATH"]},
        llm=engine_settings.llm,
        models_dir=engine_settings.models_path,
    )
    upgrade_database(settings)

    # Admin path: the CLI queues a folder and waits for the worker.
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DISTRACTORS.items():
        (folder / name).write_text(text)
    cli = subprocess.run(
        [sys.executable, "-m", "sirocco", "ingest", str(folder), "--timeout", "600"],
        cwd=REPO,
        env=stack_env,
        capture_output=True,
        text=True,
        timeout=700,
    )
    assert cli.returncode == 0, f"{cli.stdout}\n{cli.stderr}\n{log.read_text()[-3000:]}"
    assert "queued 2 document(s)" in cli.stdout
    # The user's API key, made by the admin through the CLI (printed once, on stdout).
    made = subprocess.run(
        [sys.executable, "-m", "sirocco", "keys", "create", "--user", "ana"],
        cwd=REPO, env=stack_env, capture_output=True, text=True, timeout=120,
    )
    assert made.returncode == 0, made.stderr
    api_key = made.stdout.strip()
    assert api_key.startswith("sk-sirocco-")

    db = make_engine(settings)
    factory = make_session_factory(db)
    embedder = SentenceTransformerEmbedder(settings)
    store = create_store(settings)
    services = Services(
        session_factory=factory,
        assistant=Assistant(vllm_engine, store, embedder, TraceRecorder(factory), settings),
        celery_app=create_celery(settings),
        register_files=register_files,
        enqueue_documents=enqueue_documents,
        engine=vllm_engine,
        store=store,
        embedder=embedder,
    )
    app = create_app(settings, services=services)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://sirocco",
                                     headers={"Authorization": f"Bearer {api_key}"}) as client:
            # User path: upload through the API, the worker indexes it.
            resp = await client.post(
                "/api/documents", files={"files": ("zephyr.md", ZEPHYR, "text/markdown")}
            )
            assert resp.status_code == 202, resp.text
            doc_id = resp.json()["documents"][0]["id"]
            deadline = time.monotonic() + 300
            while True:
                status = (await client.get(f"/api/documents/{doc_id}")).json()
                if status["status"] in ("done", "failed"):
                    break
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
            assert status["status"] == "done", status
            assert status["chunk_count"] >= 1

            resp = await client.post(
                "/api/chat", json={"question": "What is the Zephyr project code?"}, timeout=300
            )
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(resp.text)
        assert events[-1] == "[DONE]"
        deltas = [e for e in events if isinstance(e, dict) and e["type"] == "delta"]
        done = [e for e in events if isinstance(e, dict) and e["type"] == "done"]
        assert deltas and len(done) == 1, events
        answer = "".join(d["text"] for d in deltas)
        final = done[0]
        assert answer.strip()
        # The top citation is the uploaded document that holds the answer. The
        # bundled 135M model rarely writes [n]; this test accepts an inferred
        # citation (Sirocco's attribution to its top source). That one is never
        # checked (supported null); one the model wrote always is.
        assert final["citations"], final
        top = final["citations"][0]
        assert top["doc_id"] == doc_id
        # The display path, never the absolute server path.
        assert top["source"].endswith("zephyr.md") and not top["source"].startswith("/")
        assert "ZX-4471" in top["snippet"]
        if top["inferred"]:
            assert top["supported"] is None, top
        else:
            assert isinstance(top["supported"], bool), top

        # One trace row, with what the model saw and produced.
        with factory() as session:
            trace = session.scalars(select(Trace).where(Trace.id == final["trace_id"])).one()
            assert trace.status == "ok"
            assert trace.query == "What is the Zephyr project code?"
            assert trace.answer == answer
            assert trace.retrieved and trace.retrieved[0]["doc_id"] == doc_id
            assert trace.completion_tokens and trace.completion_tokens > 0
            assert trace.prompt_tokens and trace.prompt_tokens > 0
            assert trace.latency_ms and trace.latency_ms > 0
            assert trace.model == vllm_engine.model_name
            assert any("ZX-4471" in m["content"] for m in trace.prompt)
            docs = session.scalars(select(Document)).all()
            assert sorted(d.status for d in docs) == ["done", "done", "done"]
    finally:
        store.close()
        db.dispose()
