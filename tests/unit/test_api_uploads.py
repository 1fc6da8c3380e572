"""Uploads through the API: the uploader's visibility by default, groups chosen
at upload, per-tenant folders, and duplicate detection that reveals nothing
the uploader may not see. Real SQLite and the real ``register_files``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.services import Services
from assistant.service import Assistant
from ingest.intake import tenant_uploads
from ingest.models import Document
from ingest.service import register_files
from sirocco.auth.keys import create_key
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.settings import Settings
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore
from traces.recorder import TraceRecorder

BODY = b"# Payroll 2026\n\nEveryone's salary is listed here."


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(env="test", data_dir=tmp_path / "var")


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def client(settings: Settings, factory: sessionmaker[Session]) -> httpx.AsyncClient:
    def enqueue(celery_app: Any, doc_ids: Sequence[str], job_id: str | None = None) -> None:
        return None

    assistant = Assistant(ScriptedEngine(), StaticStore(), ConstantEmbedder(),
                          TraceRecorder(factory), settings)
    services = Services(session_factory=factory, assistant=assistant, celery_app=object(),
                        register_files=register_files, enqueue_documents=enqueue)
    app = create_app(settings, services=services)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def key(factory: sessionmaker[Session], user: str, **kw: Any) -> dict[str, str]:
    with session_scope(factory) as s:
        return {"Authorization": f"Bearer {create_key(session=s, user=user, **kw)[1]}"}


async def _upload(c: httpx.AsyncClient, headers: dict[str, str], name: str = "payroll.md",
                  **form: Any) -> httpx.Response:
    return await c.post("/api/documents", headers=headers, data=form,
                        files={"files": (name, BODY, "text/markdown")})


async def test_an_upload_is_private_to_its_uploader_by_default(client, factory, settings) -> None:
    ana = key(factory, "ana", tenant="acme", groups=["hr"])
    bob = key(factory, "bob", tenant="acme", groups=["sales"])
    async with client as c:
        r = await _upload(c, ana)
        assert r.status_code == 202, r.text
        [doc] = r.json()["documents"]
        with factory() as s:
            row = s.get(Document, doc["id"])
            assert row.acl == ["user:ana"]
            assert Path(row.source_path).parent.parent == tenant_uploads(
                settings.uploads_path, "acme")
        assert (await c.get(f"/api/documents/{doc['id']}", headers=ana)).status_code == 200
        # Another user of the tenant, not named: not found, and not listed.
        assert (await c.get(f"/api/documents/{doc['id']}", headers=bob)).status_code == 404
        assert (await c.get("/api/documents", headers=bob)).json() == []


async def test_groups_are_chosen_at_upload_among_the_uploaders_own(client, factory) -> None:
    ana = key(factory, "ana", tenant="acme", groups=["hr", "eng"])
    hr = key(factory, "hal", tenant="acme", groups=["hr"])
    bob = key(factory, "bob", tenant="acme", groups=["sales"])
    async with client as c:
        r = await _upload(c, ana, visibility="groups", groups="hr")
        assert r.status_code == 202, r.text
        doc_id = r.json()["documents"][0]["id"]
        with factory() as s:
            assert sorted(s.get(Document, doc_id).acl) == ["group:hr", "user:ana"]
        assert (await c.get(f"/api/documents/{doc_id}", headers=hr)).status_code == 200
        assert (await c.get(f"/api/documents/{doc_id}", headers=bob)).status_code == 404
        r = await _upload(c, ana, name="x.md", visibility="groups", groups="board")
        assert r.status_code == 403 and "not in group(s) board" in r.json()["error"]["message"]
        r = await _upload(c, ana, name="y.md", visibility="tenant")
        assert r.status_code == 403 and "only an admin" in r.json()["error"]["message"]
        r = await _upload(c, ana, name="z.md", visibility="world")
        assert r.status_code == 400 and "visibility must be one of" in r.text


async def test_duplicates_are_found_only_within_what_the_uploader_sees(client, factory) -> None:
    """Uploading a hidden file's content must not answer "duplicate of <id>"."""
    ana = key(factory, "ana", tenant="acme")
    bob = key(factory, "bob", tenant="acme")
    async with client as c:
        first = (await _upload(c, ana)).json()["documents"][0]
        again = (await _upload(c, ana)).json()["documents"][0]
        bobs = (await _upload(c, bob)).json()["documents"][0]
    assert first["status"] == "queued"
    assert again["status"] == "duplicate"  # Ana's own copy: she sees the original
    assert bobs["status"] == "queued"  # Bob learns nothing of Ana's file
    with factory() as s:
        assert s.get(Document, bobs["id"]).duplicate_of is None
        assert s.get(Document, again["id"]).duplicate_of == first["id"]
