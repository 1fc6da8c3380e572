"""Feedback API: thumbs/rating/comment/correction on the caller's tenant's
traces, annotator-only feedback and review, background trace writes."""

from __future__ import annotations

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
from traces.recorder import TraceRecorder


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(Settings(env="test", data_dir=tmp_path))
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def app(tmp_path: Path, factory: sessionmaker[Session]) -> Iterator[Any]:
    settings = Settings(env="test", data_dir=tmp_path)
    # Background writes, as in production: reads right after a chat must wait for them.
    recorder = TraceRecorder(factory, background=True, user_salt=settings.auth.secret_key)
    engine = ScriptedEngine(["Fact [1]."])
    assistant = Assistant(engine, StaticStore([make_hit(1)]), ConstantEmbedder(), recorder,
                          settings)
    services = Services(session_factory=factory, assistant=assistant, celery_app=object(),
                        register_files=lambda paths, *, session, tenant="default": [],
                        enqueue_documents=lambda app, ids: None, engine=engine,
                        recorder=recorder)
    yield create_app(settings, services=services)
    recorder.close()


def key(factory: sessionmaker[Session], user: str, **kw: Any) -> dict[str, str]:
    with session_scope(factory) as s:
        return {"Authorization": f"Bearer {create_key(session=s, user=user, **kw)[1]}"}


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _chat(c: httpx.AsyncClient, headers: dict[str, str]) -> str:
    r = await c.post("/api/chat", json={"question": "what?", "stream": False}, headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["trace_id"])


async def test_user_feedback_then_annotator_review(app, factory) -> None:
    ana = key(factory, "ana", tenant="acme")
    lead = key(factory, "lea", tenant="acme", groups=["annotators"])
    async with client(app) as c:
        trace_id = await _chat(c, ana)
        r = await c.post(f"/api/traces/{trace_id}/feedback", headers=ana,
                         json={"thumbs": -1, "reason": "wrong", "correction": "Better [1]."})
        assert r.status_code == 201, r.text
        fb = r.json()
        assert (fb["thumbs"], fb["correction"], fb["review_status"], fb["source"]) == (
            -1, "Better [1].", "pending", "user")

        detail = (await c.get(f"/api/traces/{trace_id}", headers=ana)).json()
        assert [f["id"] for f in detail["feedback"]] == [fb["id"]]
        assert detail["messages"][-1]["content"] == "Fact [1]."
        assert {s["kind"] for s in detail["spans"]} == {"retrieval", "llm"}
        assert detail["user_hash"] and "ana" not in detail["user_hash"]

        # Reviewing is for annotators only.
        r = await c.patch(f"/api/feedback/{fb['id']}/review", headers=ana,
                          json={"review_status": "approved"})
        assert r.status_code == 403
        assert "reviewer group" in r.json()["error"]["message"]
        queue = (await c.get("/api/feedback?review_status=pending&has_correction=true",
                             headers=lead)).json()
        assert [f["id"] for f in queue] == [fb["id"]]
        r = await c.patch(f"/api/feedback/{fb['id']}/review", headers=lead,
                          json={"review_status": "approved", "note": "ok"})
        assert r.status_code == 200 and r.json()["review_status"] == "approved"
        assert r.json()["reviewed_at"] is not None
        assert (await c.get("/api/feedback?review_status=pending", headers=lead)).json() == []


async def test_feedback_stays_in_the_callers_tenant(app, factory) -> None:
    ana = key(factory, "ana", tenant="acme")
    eve = key(factory, "eve", tenant="globex", admin=True)
    async with client(app) as c:
        trace_id = await _chat(c, ana)
        r = await c.post(f"/api/traces/{trace_id}/feedback", headers=eve, json={"thumbs": 1})
        assert r.status_code == 404
        assert r.json()["error"]["message"] == f"trace {trace_id!r} not found"
        fb = (await c.post(f"/api/traces/{trace_id}/feedback", headers=ana,
                           json={"rating": 4})).json()
        r = await c.patch(f"/api/feedback/{fb['id']}/review", headers=eve,
                          json={"review_status": "rejected"})
        assert r.status_code == 404
        assert (await c.get("/api/feedback", headers=eve)).json() == []


async def test_bad_feedback_is_refused_with_a_reason(app, factory) -> None:
    ana = key(factory, "ana", tenant="acme")
    async with client(app) as c:
        trace_id = await _chat(c, ana)
        r = await c.post(f"/api/traces/{trace_id}/feedback", headers=ana, json={})
        assert r.status_code == 422
        assert "feedback needs thumbs, rating, comment or correction" in r.text
        r = await c.post(f"/api/traces/{trace_id}/feedback", headers=ana,
                         json={"correction": " Fact [1]. "})
        assert r.status_code == 400
        assert r.json()["error"]["message"] == "the correction is the same as the answer"
        r = await c.post(f"/api/traces/{trace_id}/feedback", headers=ana,
                         json={"thumbs": 1, "source": "annotator"})
        assert r.status_code == 403


async def test_traces_are_read_by_their_owner_and_reviewers_only(app, factory) -> None:
    """The hole an outside review found: any key read every trace of its tenant."""
    admin = key(factory, "root", tenant="acme", admin=True)
    eve = key(factory, "eve", tenant="acme", groups=["interns"])
    ana = key(factory, "ana", tenant="acme", groups=["hr"])
    rev = key(factory, "rita", tenant="acme", groups=["reviewers"])
    gus = key(factory, "gus", tenant="globex", admin=True)
    async with client(app) as c:
        admins = await _chat(c, admin)
        eves = await _chat(c, eve)

        async def listed(headers: dict[str, str]) -> set[str]:
            r = await c.get("/api/traces", headers=headers)
            assert r.status_code == 200, r.text
            return {t["id"] for t in r.json()}

        # A user sees their own traces and no one else's.
        assert await listed(eve) == {eves}
        assert (await c.get(f"/api/traces/{eves}", headers=eve)).status_code == 200
        r = await c.get(f"/api/traces/{admins}", headers=eve)
        assert r.status_code == 404
        assert r.json()["error"]["message"] == f"trace {admins!r} not found"
        # Another user of the same tenant, without a reviewer group: nothing of Eve's.
        assert await listed(ana) == set()
        assert (await c.get(f"/api/traces/{eves}", headers=ana)).status_code == 404
        # Admins and reviewers of the tenant read both; another tenant's admin neither.
        assert await listed(admin) == await listed(rev) == {admins, eves}
        assert (await c.get(f"/api/traces/{eves}", headers=rev)).status_code == 200
        assert await listed(gus) == set()
        assert (await c.get(f"/api/traces/{eves}", headers=gus)).status_code == 404


async def test_feedback_by_the_owner_or_a_reviewer_once_per_author(app, factory) -> None:
    admin = key(factory, "root", tenant="acme", admin=True)
    eve = key(factory, "eve", tenant="acme", groups=["interns"])
    rev = key(factory, "rita", tenant="acme", groups=["reviewers"])
    async with client(app) as c:
        admins = await _chat(c, admin)
        eves = await _chat(c, eve)
        # Eve cannot rate (or correct) an answer she did not ask for.
        r = await c.post(f"/api/traces/{admins}/feedback", headers=eve,
                         json={"thumbs": -1, "correction": "Something else."})
        assert r.status_code == 404
        # Her own answer: one vote, which a second one replaces.
        first = await c.post(f"/api/traces/{eves}/feedback", headers=eve, json={"thumbs": 1})
        second = await c.post(f"/api/traces/{eves}/feedback", headers=eve,
                              json={"thumbs": -1, "reason": "wrong"})
        assert first.status_code == second.status_code == 201
        assert second.json()["id"] == first.json()["id"]
        detail = (await c.get(f"/api/traces/{eves}", headers=eve)).json()
        assert [(f["thumbs"], f["reason"]) for f in detail["feedback"]] == [(-1, "wrong")]
        # A reviewer may add an annotation to anyone's answer; Eve may not annotate.
        r = await c.post(f"/api/traces/{admins}/feedback", headers=rev,
                         json={"source": "annotator", "comment": "cites the wrong policy"})
        assert r.status_code == 201, r.text
        r = await c.post(f"/api/traces/{eves}/feedback", headers=eve,
                         json={"source": "annotator", "comment": "x"})
        assert r.status_code == 403
        assert "reviewer" in r.json()["error"]["message"]
        # The review queue is the reviewers'.
        assert (await c.get("/api/feedback", headers=eve)).status_code == 403
        assert len((await c.get("/api/feedback", headers=rev)).json()) == 2
