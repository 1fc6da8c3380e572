"""Exports through the API: queued as ``sirocco.traces.export`` after the
commit, run by the task body, status with manifest, downloads; kept to the
caller's tenant; annotators and admins only. The broker is a recording
double here (the integration tier runs a real worker)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.services import Services
from assistant.service import Assistant
from sirocco.auth.keys import create_key
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.settings import Settings
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
from traces.export.jobs import execute_export
from traces.recorder import TraceRecorder
from workers.export_tasks import EXPORT_TRACES


class RecordingCelery:
    """Remembers ``send_task`` calls instead of talking to a broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any]]] = []

    def send_task(self, name: str, args: list[Any]) -> Any:
        self.sent.append((name, args))
        return type("Result", (), {"id": f"task-{len(self.sent)}"})()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(env="test", data_dir=tmp_path)


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def celery() -> RecordingCelery:
    return RecordingCelery()


@pytest.fixture
def app(settings: Settings, factory: sessionmaker[Session], celery: RecordingCelery) -> Any:
    engine = ScriptedEngine(["The mistral is a cold wind [1]."])
    assistant = Assistant(engine, StaticStore([make_hit(1)]), ConstantEmbedder(),
                          TraceRecorder(factory, default_consent=True), settings)
    services = Services(session_factory=factory, assistant=assistant, celery_app=celery,
                        register_files=lambda paths, *, session, tenant="default": [],
                        enqueue_documents=lambda app, ids: None, engine=engine)
    return create_app(settings, services=services)


def key(factory: sessionmaker[Session], user: str, **kw: Any) -> dict[str, str]:
    with session_scope(factory) as s:
        return {"Authorization": f"Bearer {create_key(session=s, user=user, **kw)[1]}"}


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_export_job_end_to_end(app, factory, settings, celery) -> None:
    ana = key(factory, "ana", tenant="acme")
    lead = key(factory, "lea", tenant="acme", groups=["annotators"])
    other = key(factory, "olga", tenant="globex", admin=True)
    async with client(app) as c:
        for q in ("What is the mistral?", "Where does it blow?"):
            r = await c.post("/api/chat", json={"question": q, "stream": False}, headers=ana)
            assert r.status_code == 200
        r = await c.post("/api/chat", json={"question": "Other tenant?", "stream": False},
                         headers=other)
        assert r.status_code == 200

        r = await c.post("/api/exports", headers=ana, json={"format": "openai"})
        assert r.status_code == 403
        r = await c.post("/api/exports", headers=lead, json={
            "format": "openai", "filters": {"tenant": "globex"},
            "options": {"validation_fraction": 0}})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] == "queued" and job["request"]["filters"]["tenant"] == "acme"
        assert celery.sent == [(EXPORT_TRACES, [job["id"]])]

        r = await c.get(f"/api/exports/{job['id']}/download", headers=lead)
        assert r.status_code == 400
        assert r.json()["error"]["message"] == f"export {job['id']!r} is queued, not done"

        # What the worker does with the task.
        execute_export(job["id"], session_factory=factory, exports_root=settings.exports_path,
                       tokenizer_path=None)

        done = (await c.get(f"/api/exports/{job['id']}", headers=lead)).json()
        assert done["status"] == "done"
        assert done["manifest"]["counts"]["records"] == 2  # acme's two, not globex's
        train = await c.get(f"/api/exports/{job['id']}/download?file=train.jsonl",
                            headers=lead)
        assert train.status_code == 200
        rows = [json.loads(line) for line in train.text.splitlines()]
        assert {r["messages"][-1]["content"] for r in rows} == {"The mistral is a cold wind [1]."}
        assert "Other tenant?" not in train.text
        archive = await c.get(f"/api/exports/{job['id']}/download", headers=lead)
        names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
        assert sorted(names) == ["manifest.json", "train.jsonl", "validation.jsonl"]
        r = await c.get(f"/api/exports/{job['id']}/download?file=../../etc/passwd",
                        headers=lead)
        assert r.status_code == 400

        assert (await c.get(f"/api/exports/{job['id']}", headers=other)).status_code == 404
        listed = (await c.get("/api/exports", headers=lead)).json()
        assert [j["id"] for j in listed] == [job["id"]]


async def test_a_failing_export_keeps_its_reason(app, factory, settings) -> None:
    lead = key(factory, "lea", tenant="acme", groups=["annotators"])
    async with client(app) as c:
        job = (await c.post("/api/exports", headers=lead, json={"format": "mistral"})).json()
    # The tokenizer folder is not a tokenizer: loading it fails.
    with pytest.raises(ValueError):
        execute_export(job["id"], session_factory=factory, exports_root=settings.exports_path,
                       tokenizer_path=settings.data_dir)
    async with client(app) as c:
        failed = (await c.get(f"/api/exports/{job['id']}", headers=lead)).json()
    assert failed["status"] == "failed"
    assert failed["error"].startswith("internal error: ValueError")
