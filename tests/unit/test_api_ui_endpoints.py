"""Endpoints the web UI needs, each with a second user who must not get what
the first gets: who am I (``/api/me``), renaming a conversation, the cited
passage under the caller's ACL (real Qdrant local store), and the uploader
following their own upload job."""

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
from ingest.jobs import finish_item, start_item
from ingest.models import Document
from ingest.service import register_files
from retrieval.factory import create_store
from retrieval.passages import join_chunks
from retrieval.store import Store
from sirocco.auth.keys import create_key
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.settings import Settings
from sirocco.types import Chunk, SearchHit
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
from traces.recorder import TraceRecorder

BODY = b"# Payroll 2026\n\nEveryone's salary is listed here."


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(env="test", data_dir=tmp_path / "var", traces={"background": False},
                    assistant={"rewrite_query": "off"}, qdrant={"path": tmp_path / "qdrant"})


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = create_store(settings)
    store.ensure_collection(ConstantEmbedder.dim)
    yield store
    store.close()


class Enqueued:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, celery_app: Any, doc_ids: Sequence[str], job_id: str | None = None):
        self.calls.append((list(doc_ids), job_id))


@pytest.fixture
def client(settings: Settings, factory: sessionmaker[Session],
           store: Store) -> httpx.AsyncClient:
    recorder = TraceRecorder(factory, user_salt=settings.auth.secret_key)
    engine = ScriptedEngine(["Economy class [1]."] * 4)
    assistant = Assistant(engine, StaticStore([make_hit(1)]), ConstantEmbedder(), recorder,
                          settings)
    services = Services(session_factory=factory, assistant=assistant, celery_app=object(),
                        register_files=register_files, enqueue_documents=Enqueued(),
                        store=store, embedder=ConstantEmbedder(), recorder=recorder)
    app = create_app(settings, services=services)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def key(factory: sessionmaker[Session], user: str, **kw: Any) -> dict[str, str]:
    with session_scope(factory) as s:
        return {"Authorization": f"Bearer {create_key(session=s, user=user, **kw)[1]}"}


async def test_me_names_the_callers_tenant_user_groups_and_roles(client, factory) -> None:
    ana = key(factory, "ana", tenant="acme", groups=["hr", "eng"])
    rita = key(factory, "rita", tenant="acme", groups=["reviewers"])
    root = key(factory, "root", tenant="globex", admin=True)
    async with client as c:
        assert (await c.get("/api/me", headers=ana)).json() == {
            "tenant": "acme", "user": "ana", "groups": ["eng", "hr"], "is_admin": False,
            "is_reviewer": False}
        r = (await c.get("/api/me", headers=rita)).json()
        assert (r["user"], r["is_admin"], r["is_reviewer"]) == ("rita", False, True)
        r = (await c.get("/api/me", headers=root)).json()
        assert (r["tenant"], r["is_admin"], r["is_reviewer"]) == ("globex", True, True)
        r = await c.get("/api/me")
        assert r.status_code == 401 and "missing API key" in r.json()["error"]["message"]
        r = await c.get("/api/me", headers={"Authorization": "Bearer sk-sirocco-nope"})
        assert r.status_code == 401


async def test_a_conversation_is_renamed_by_its_owner_only(client, factory) -> None:
    ana = key(factory, "ana", tenant="acme")
    bob = key(factory, "bob", tenant="acme")
    gus = key(factory, "ana", tenant="globex")  # same user name, another tenant
    async with client as c:
        r = await c.post("/api/chat", headers=ana, json={"question": "Which class?",
                                                         "stream": False})
        conv = r.json()["conversation_id"]
        r = await c.patch(f"/api/conversations/{conv}", headers=ana,
                          json={"title": "  Travel:\n booking   classes "})
        assert r.status_code == 200, r.text
        assert (r.json()["id"], r.json()["title"], r.json()["turn_count"]) == (
            conv, "Travel: booking classes", 1)
        listed = (await c.get("/api/conversations", headers=ana)).json()
        assert [x["title"] for x in listed] == ["Travel: booking classes"]
        for other in (bob, gus):
            r = await c.patch(f"/api/conversations/{conv}", headers=other,
                              json={"title": "mine now"})
            assert r.status_code == 404
            assert r.json()["error"]["message"] == f"conversation {conv!r} not found"
        assert (await c.get(f"/api/conversations/{conv}", headers=ana)).json()["title"] == (
            "Travel: booking classes")
        r = await c.patch(f"/api/conversations/{conv}", headers=ana, json={"title": "   "})
        assert r.status_code == 400 and "the title is blank" in r.json()["error"]["message"]
        r = await c.patch(f"/api/conversations/{conv}", headers=ana, json={"title": "x" * 121})
        assert r.status_code == 422


def _index(store: Store, factory, *, tenant: str, acl: list[str] | None, text: str,
           chunk: int = 40) -> tuple[str, list[str]]:
    """A document of ``tenant`` with ``acl`` in SQL and in the store, cut into
    overlapping chunks of ``chunk`` characters (10 of overlap)."""
    with session_scope(factory) as s:
        doc = Document(tenant=tenant, source_path=f"/srv/{tenant}/{len(text)}.md",
                       title="Payroll", acl=acl, status="done")
        s.add(doc)
        s.flush()
        doc_id = doc.id
    chunks, start, i = [], 0, 0
    while start < len(text):
        end = min(len(text), start + chunk)
        chunks.append(Chunk(doc_id=doc_id, chunk_index=i, text=text[start:end], title="Payroll",
                            source="hr/payroll.md", start_char=start, end_char=end, page=3,
                            headings=("Payroll",), tenant=tenant, acl=tuple(acl or ["*"])))
        start, i = end - 10 if end < len(text) else end, i + 1
    store.upsert(chunks, [[1.0, 0.0, 0.0, 0.0]] * len(chunks))
    return doc_id, [c.id for c in chunks]


TEXT = ("Salaries are paid on the 25th. Bonuses are paid in March after the review. "
        "Overtime needs the manager's approval in writing.")


async def test_a_cited_passage_is_read_under_the_callers_acl(client, factory, store) -> None:
    ana = key(factory, "ana", tenant="acme", groups=["hr"])
    bob = key(factory, "bob", tenant="acme", groups=["sales"])
    root = key(factory, "root", tenant="acme", admin=True)
    hr_admin = key(factory, "hera", tenant="acme", admin=True, groups=["hr"])
    gus = key(factory, "gus", tenant="globex", groups=["hr"])
    doc_id, ids = _index(store, factory, tenant="acme", acl=["group:hr"], text=TEXT)
    async with client as c:
        r = await c.get(f"/api/documents/{doc_id}/passage", headers=ana,
                        params={"chunk_id": ids[1:3]})
        assert r.status_code == 200, r.text
        p = r.json()
        # Two overlapping chunks joined once, at their document offsets.
        assert p["text"] == TEXT[30:100] and (p["start_char"], p["end_char"]) == (30, 100)
        assert (p["title"], p["source"], p["page"], p["headings"]) == (
            "Payroll", "hr/payroll.md", 3, ["Payroll"])
        assert [(x["offset"], x["start_char"]) for x in p["parts"]] == [(0, 30), (30, 60)]
        # A document offset maps onto the text through its part.
        span = TEXT.index("Bonuses"), TEXT.index("Bonuses") + len("Bonuses")
        part = next(x for x in p["parts"] if x["start_char"] <= span[0] < x["end_char"])
        at = part["offset"] + span[0] - part["start_char"]
        assert p["text"][at:at + 7] == "Bonuses"
        assert (await c.get(f"/api/documents/{doc_id}/passage", headers=hr_admin,
                            params={"chunk_id": ids[0]})).status_code == 200
        # Same tenant without the group (an admin key included: content follows the
        # ACL, as in answers), and another tenant's user of that group: 404.
        for other in (bob, root, gus):
            r = await c.get(f"/api/documents/{doc_id}/passage", headers=other,
                            params={"chunk_id": ids[1]})
            assert r.status_code == 404, r.text
            assert r.json()["error"]["message"] == f"document {doc_id!r} not found"
        # A chunk of another document named under this one: not found either.
        other_doc, other_ids = _index(store, factory, tenant="acme", acl=None, text="x" * 30)
        r = await c.get(f"/api/documents/{doc_id}/passage", headers=ana,
                        params={"chunk_id": other_ids[0]})
        assert r.status_code == 404
        assert "passage of document" in r.json()["error"]["message"]
        # Bad input: no chunk, or something that is not a chunk id.
        r = await c.get(f"/api/documents/{doc_id}/passage", headers=ana)
        assert r.status_code == 422
        r = await c.get(f"/api/documents/{doc_id}/passage", headers=ana,
                        params={"chunk_id": "../../etc"})
        assert r.status_code == 400 and "is not a chunk id" in r.json()["error"]["message"]


async def test_the_store_itself_refuses_chunks_outside_the_acl(factory, store) -> None:
    """Defence in depth: even with the SQL check bypassed, the store's filter
    hides another group's chunks."""
    from retrieval.passages import read_passage
    from sirocco.errors import NotFoundError
    from sirocco.principal import Principal

    doc_id, ids = _index(store, factory, tenant="acme", acl=["group:hr"], text=TEXT)
    vector = [1.0, 0.0, 0.0, 0.0]
    assert read_passage(store, vector, Principal("acme", "ana", ("hr",)), doc_id, ids).text == TEXT
    for caller in (Principal("acme", "bob", ("sales",)), Principal("globex", "gus", ("hr",))):
        with pytest.raises(NotFoundError):
            read_passage(store, vector, caller, doc_id, ids)


def test_chunks_with_a_gap_are_joined_by_a_blank_line_and_keep_their_offsets() -> None:
    def hit(i: int, start: int, text: str) -> SearchHit:
        return SearchHit(chunk_id=f"c{i}", doc_id="d", chunk_index=i, text=text, title="T",
                         source="s", score=1.0, start_char=start, end_char=start + len(text))

    p = join_chunks([hit(5, 100, "later part"), hit(1, 0, "first part")])
    assert p.text == "first part\n\nlater part"
    assert [(x.chunk_id, x.offset) for x in p.parts] == [("c1", 0), ("c5", 12)]
    assert p.text[p.parts[1].offset:].startswith("later")


async def test_the_uploader_follows_their_own_upload_job(client, factory) -> None:
    ana = key(factory, "ana", tenant="acme", groups=["hr"])
    bob = key(factory, "bob", tenant="acme", groups=["hr"])
    root = key(factory, "root", tenant="acme", admin=True)
    gus = key(factory, "ana", tenant="globex", admin=True)
    async with client as c:
        r = await c.post("/api/documents", headers=ana, data={"visibility": "groups"},
                         files={"files": ("payroll.md", BODY, "text/markdown")})
        assert r.status_code == 202, r.text
        job_id, [doc] = r.json()["job_id"], r.json()["documents"]
        r = await c.get(f"/api/jobs/{job_id}", headers=ana)
        assert r.status_code == 200, r.text
        job = r.json()
        assert (job["kind"], job["created_by"], job["total"]) == ("upload", "ana", 1)
        # File names, not the server's paths.
        assert [(i["path"], i["filename"]) for i in job["items"]] == [("payroll.md",
                                                                        "payroll.md")]
        # A worker fails the file: the uploader reads the error in plain words.
        assert start_item(job_id, doc["id"], session_factory=factory)
        finish_item(job_id, doc["id"], session_factory=factory, state="failed",
                    error="payroll.md: the file is empty")
        job = (await c.get(f"/api/jobs/{job_id}", headers=ana)).json()
        assert (job["state"], job["progress"]) == ("failed", 1.0)
        assert job["items"][0]["error"] == "payroll.md: the file is empty"
        # Bob shares the group (and so sees the document) but not the job; another
        # tenant's admin does not see it; this tenant's admin does, with paths.
        assert (await c.get(f"/api/documents/{doc['id']}", headers=bob)).status_code == 200
        # Every items view of the job (the web UI polls large jobs with
        # items=failed or items=none) keeps the same rule.
        for view in ("all", "failed", "none"):
            r = await c.get(f"/api/jobs/{job_id}", headers=ana, params={"items": view})
            assert r.status_code == 200 and r.json()["failed"] == 1, view
            for other in (bob, gus):
                r = await c.get(f"/api/jobs/{job_id}", headers=other, params={"items": view})
                assert r.status_code == 404, view
                assert r.json()["error"]["message"] == f"job {job_id!r} not found"
        r = (await c.get(f"/api/jobs/{job_id}", headers=root)).json()
        assert r["items"][0]["path"].endswith("/payroll.md") and r["items"][0]["path"] != (
            "payroll.md")
        # Managing jobs stays with admins.
        for path in ("/api/jobs", f"/api/jobs/{job_id}/retry"):
            r = await (c.get(path, headers=ana) if path == "/api/jobs"
                       else c.post(path, headers=ana))
            assert r.status_code == 403, path
