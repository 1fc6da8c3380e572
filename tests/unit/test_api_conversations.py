"""Conversations of the native chat through the API: stored turns become the
history of a follow-up, and only their owner can list, read or delete them.
Server tools requested by the native chat run with the caller's permissions."""

from __future__ import annotations

import json
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
from sirocco.principal import Principal
from sirocco.settings import Settings
from sirocco.types import ToolCall
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
from traces.recorder import TraceRecorder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(env="test", data_dir=tmp_path, traces={"background": False},
                    assistant={"rewrite_query": "off"})


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def make_app(settings: Settings, factory: sessionmaker[Session], engine: ScriptedEngine,
             store: StaticStore | None = None) -> Any:
    store = store or StaticStore([make_hit(1, text="Economy class for flights.")])
    recorder = TraceRecorder(factory, user_salt=settings.auth.secret_key)
    assistant = Assistant(engine, store, ConstantEmbedder(), recorder, settings)
    services = Services(session_factory=factory, assistant=assistant, celery_app=object(),
                        register_files=lambda paths, *, session, tenant="default": [],
                        enqueue_documents=lambda app, ids: None, engine=engine, store=store)
    return create_app(settings, services=services)


def key(factory: sessionmaker[Session], user: str, **kw: Any) -> dict[str, str]:
    with session_scope(factory) as s:
        return {"Authorization": f"Bearer {create_key(session=s, user=user, **kw)[1]}"}


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_a_conversation_keeps_its_turns_for_its_owner_only(settings, factory) -> None:
    engine = ScriptedEngine(["Economy class [1]."])
    app = make_app(settings, factory, engine)
    ana, bob = key(factory, "ana"), key(factory, "bob")
    async with client(app) as c:
        first = await c.post("/api/chat", headers=ana,
                             json={"question": "Which class do I fly?", "stream": False})
        assert first.status_code == 200, first.text
        conv = first.json()["conversation_id"]
        # Streamed follow-up in the same conversation: the done event names it.
        r = await c.post("/api/chat", headers=ana,
                         json={"question": "And for long flights?", "conversation_id": conv})
        frames = [json.loads(line[6:]) for line in r.text.splitlines()
                  if line.startswith("data: {")]
        assert frames[-1]["type"] == "done" and frames[-1]["conversation_id"] == conv
        # The first turn was the history of the second.
        sent = engine.calls[1]
        assert [(m.role, m.content) for m in sent[1:3]] == [
            ("user", "Which class do I fly?"), ("assistant", "Economy class [1].")]

        listed = (await c.get("/api/conversations", headers=ana)).json()
        assert [(x["id"], x["title"], x["turn_count"]) for x in listed] == [
            (conv, "Which class do I fly?", 2)]
        detail = (await c.get(f"/api/conversations/{conv}", headers=ana)).json()
        assert [t["question"] for t in detail["turns"]] == ["Which class do I fly?",
                                                            "And for long flights?"]
        assert detail["turns"][0]["citations"][0]["doc_id"] == "doc-1"

        # Another user of the tenant sees nothing and cannot write into it.
        assert (await c.get("/api/conversations", headers=bob)).json() == []
        assert (await c.get(f"/api/conversations/{conv}", headers=bob)).status_code == 404
        assert (await c.delete(f"/api/conversations/{conv}", headers=bob)).status_code == 404
        # Ids are scoped per owner: the same id names a new conversation of Bob's,
        # without Ana's turns as history and without touching hers.
        calls = len(engine.calls)
        r = await c.post("/api/chat", headers=bob,
                         json={"question": "hi", "conversation_id": conv, "stream": False})
        assert r.status_code == 200 and r.json()["conversation_id"] == conv
        sent = [(m.role, m.content or "") for m in engine.calls[calls]]
        assert sent[-1][0] == "user" and sent[-1][1].endswith("Question: hi")
        assert not any("Which class" in content for _, content in sent)
        bobs = (await c.get(f"/api/conversations/{conv}", headers=bob)).json()
        assert [t["question"] for t in bobs["turns"]] == ["hi"]
        anas = (await c.get(f"/api/conversations/{conv}", headers=ana)).json()
        assert anas["turn_count"] == 2

        assert (await c.delete(f"/api/conversations/{conv}", headers=ana)).status_code == 204
        assert (await c.get(f"/api/conversations/{conv}", headers=ana)).status_code == 404
        # Bob's conversation of that id is his own and stays.
        assert (await c.get(f"/api/conversations/{conv}", headers=bob)).status_code == 200


async def test_deleting_a_conversation_keeps_or_deletes_its_traces(settings, factory) -> None:
    app = make_app(settings, factory, ScriptedEngine(["Economy class [1]."]))
    ana = key(factory, "ana")
    async with client(app) as c:
        async def conversation() -> tuple[str, str]:
            r = (await c.post("/api/chat", headers=ana,
                              json={"question": "Which class?", "stream": False})).json()
            return r["conversation_id"], r["trace_id"]

        kept_conv, kept_trace = await conversation()
        gone_conv, gone_trace = await conversation()
        assert (await c.delete(f"/api/conversations/{kept_conv}", headers=ana)).status_code == 204
        r = await c.delete(f"/api/conversations/{gone_conv}?traces=delete", headers=ana)
        assert r.status_code == 204
        # Default: the trace stays for review and export; on request it goes too.
        assert (await c.get(f"/api/traces/{kept_trace}", headers=ana)).status_code == 200
        assert (await c.get(f"/api/traces/{gone_trace}", headers=ana)).status_code == 404
        bad = await c.delete(f"/api/conversations/{kept_conv}?traces=shred", headers=ana)
        assert bad.status_code == 422


async def test_native_chat_runs_requested_server_tools(settings, factory) -> None:
    call = ToolCall(id="abcDEF123", name="search_documents",
                    arguments='{"query": "economy"}')
    engine = ScriptedEngine(steps=[[call], ["Economy class [1]."]])
    app = make_app(settings, factory, engine)
    async with client(app) as c:
        r = await c.post("/api/chat", headers=key(factory, "ana", groups=["staff"]),
                         json={"question": "Which class?", "stream": False,
                               "tools": ["search_documents"], "tool_choice": "search_documents"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [t["name"] for t in body["tool_results"]] == ["search_documents"]
        assert engine.choices[0] == {"type": "function",
                                     "function": {"name": "search_documents"}}
        bad = await c.post("/api/chat", headers=key(factory, "bob"),
                           json={"question": "q", "tools": ["rm_rf"], "stream": False})
        assert bad.status_code == 400 and "unknown tool 'rm_rf'" in bad.json()["error"]["message"]
        bad = await c.post("/api/chat", headers=key(factory, "eve"),
                           json={"question": "q", "tools": [], "tool_choice": "required"})
        assert bad.status_code == 400


def test_list_sources_counts_only_documents_the_caller_may_see(factory) -> None:
    from api.catalog import source_catalog
    from ingest.models import Document, Source
    
    with session_scope(factory) as s:
        s.add_all([Source(id="s1", tenant="acme", name="handbook", kind="folder"),
                   Source(id="s2", tenant="acme", name="payroll", kind="folder"),
                   Source(id="s3", tenant="other", name="theirs", kind="folder")])
        s.flush()
        s.add_all([
            Document(tenant="acme", source_path="/h/1", source_id="s1", status="done"),
            Document(tenant="acme", source_path="/h/2", source_id="s1", status="done",
                     acl=["group:hr"]),
            Document(tenant="acme", source_path="/p/1", source_id="s2", status="done",
                     acl=["group:finance"]),
            Document(tenant="other", source_path="/t/1", source_id="s3", status="done")])
    listed = source_catalog(factory)
    assert listed(Principal(tenant="acme", user="ana", groups=("hr",))) == [
        {"id": "s1", "name": "handbook", "kind": "folder", "documents": 2}]
    assert [x["name"] for x in listed(Principal(tenant="acme", groups=("finance",)))] == [
        "handbook", "payroll"]
