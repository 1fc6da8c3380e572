"""The answering loop with the real vLLM engine and the bundled model: a forced
``search_documents`` call (structured outputs) runs under the caller's ACL, its
result reaches the model's next turn, and the trace keeps the call as a tool
span; citations in the answer are verified against their chunks; a follow-up in
a stored conversation is rewritten before retrieval."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

import assistant.conversations  # noqa: F401  (tables created with the others)
import ingest.models  # noqa: F401
import sirocco.auth.models  # noqa: F401
from ingest.embed_stage import ingest_document
from ingest.embedding.base import create_embedder
from ingest.service import Access, register_files
from retrieval.factory import create_store
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.settings import Settings
from traces.models import Trace

pytestmark = pytest.mark.integration

PUBLIC = "Parking: visitors park on level minus two of the garage; staff park on level minus one."
SECRET = "Payroll: the salary review of the finance team happens every March."


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any, Any, Any]]:
    tmp = tmp_path_factory.mktemp("tools")
    settings = Settings(env="test", data_dir=tmp / "var", traces={"background": False},
                        qdrant={"path": str(tmp / "qdrant"), "collection": "tools"})
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    factory: sessionmaker[Session] = make_session_factory(engine)
    ids = []
    for name, text, access in (("public", PUBLIC, Access.of()),
                               ("finance", SECRET, Access.of(groups=["finance"]))):
        folder = tmp / name
        folder.mkdir()
        (folder / f"{name}.md").write_text(f"# {name}\n\n{text}\n")
        with session_scope(factory) as s:
            ids += [d.id for d in register_files([folder], session=s, access=access)]
    embedder = create_embedder(settings)
    store = create_store(settings)
    for doc_id in ids:
        assert ingest_document(doc_id, session_factory=factory, embedder=embedder, store=store,
                               settings=settings) > 0
    yield settings, factory, embedder, store
    store.close()
    engine.dispose()


async def test_forced_search_documents_round_trip_through_the_api(
        world: Any, vllm_engine: Any, engine_settings: Settings) -> None:
    from api.app import create_app
    from api.services import Services
    from assistant.service import Assistant
    from sirocco.auth.keys import create_key
    from traces.recorder import TraceRecorder

    base, factory, embedder, store = world
    settings = base.model_copy(update={
        # Room for the forced call's JSON (a cut one is not a call).
        "llm": engine_settings.llm.model_copy(update={"max_tokens": 256})})
    with session_scope(factory) as s:
        _, raw = create_key(session=s, user="ana", groups=["staff"])
    assistant = Assistant(vllm_engine, store, embedder, TraceRecorder(factory), settings)
    services = Services(session_factory=factory, assistant=assistant, celery_app=None,
                        register_files=lambda *a, **k: [], enqueue_documents=lambda *a: None,
                        engine=vllm_engine, store=store, embedder=embedder)
    app = create_app(settings, services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 timeout=600) as client:
        r = await client.post("/api/chat", headers={"Authorization": f"Bearer {raw}"}, json={
            "question": "Where do visitors park?", "stream": False,
            "tools": ["search_documents"], "tool_choice": "search_documents"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["tool_results"]) == 1, body
    [result] = body["tool_results"]
    assert result["name"] == "search_documents" and result["is_error"] is False
    # Structured outputs: the model's arguments satisfy the tool's schema.
    arguments = json.loads(result["arguments"])
    assert isinstance(arguments["query"], str) and arguments["query"].strip()
    # Whatever the model searched for, the finance document is not the caller's.
    found = json.loads(result["content"])["results"]
    assert all("salary" not in item["text"] for item in found)
    assert all("salary" not in s["snippet"] for s in body["sources"])
    assert body["answer"].strip()
    # The small model may cite nothing: an inferred citation is accepted; it is
    # never checked (supported null), while one the model wrote always is.
    for citation in body["citations"]:
        if citation["inferred"]:
            assert citation["supported"] is None, citation
        else:
            assert isinstance(citation["supported"], bool), citation

    with session_scope(factory) as s:
        trace = s.get(Trace, body["trace_id"])
        assert trace is not None
        kinds = [span.kind for span in trace.spans]
        tool_spans = [span for span in trace.spans if span.kind == "tool"]
    assert kinds.count("llm") == 2, kinds
    assert [span.name for span in tool_spans] == ["execute_tool search_documents"]
    assert tool_spans[0].status == "ok"
