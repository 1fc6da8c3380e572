"""POST /api/search: the chat's retrieval without the model (same search,
min_score, packing, ACL), the citation fields of each hit, validation,
keys and rate limits. Real Qdrant and the real server:
tests/e2e/test_e2e_search_langchain.py."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

import assistant.conversations  # noqa: F401  (/api/chat stores turns)
import ingest.models  # noqa: F401
import sirocco.auth.models  # noqa: F401
from api.app import create_app
from api.services import Services
from assistant.service import Assistant
from sirocco.auth.keys import create_key
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.principal import Principal
from sirocco.settings import Settings
from sirocco.types import SearchHit
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
from traces.recorder import TraceRecorder


class AclStore(StaticStore):
    """``StaticStore`` that keeps, as Qdrant's filter does, only hits of
    documents of the caller's tenant whose ACL names one of its entries (and
    of ``filter.doc_ids``, when set)."""

    def __init__(self, hits: Sequence[SearchHit], acl: dict[str, tuple[str, list[str]]]):
        super().__init__(hits)
        self.acl = acl  # doc_id -> (tenant, acl entries)

    def search(self, vector: Any, *, top_k: int, filter: Any = None, **kw: Any) -> list[SearchHit]:
        found = super().search(vector, top_k=len(self.hits), filter=filter, **kw)
        caller: Principal = filter.caller
        return [h for h in found if self.acl[h.doc_id][0] == caller.tenant
                and set(self.acl[h.doc_id][1]) & set(caller.acl_entries())
                and (filter.doc_ids is None or h.doc_id in filter.doc_ids)][:top_k]


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(Settings(env="test", data_dir=tmp_path))
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def settings_for(tmp_path: Path, **over: Any) -> Settings:
    return Settings(env="test", data_dir=tmp_path, traces={"background": False}, **over)


def app_for(settings: Settings, factory: sessionmaker[Session], store: Any,
            embedder: ConstantEmbedder | None = None) -> Any:
    engine = ScriptedEngine(["Fact [1]."])
    assistant = Assistant(engine, store, embedder or ConstantEmbedder(), TraceRecorder(factory),
                          settings)
    services = Services(session_factory=factory, assistant=assistant, celery_app=object(),
                        register_files=lambda paths, *, session, tenant="default": [],
                        enqueue_documents=lambda app, ids: None, engine=engine, store=store)
    return create_app(settings, services=services)


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def key(factory: sessionmaker[Session], user: str, **kw: Any) -> dict[str, str]:
    with session_scope(factory) as s:
        return {"Authorization": f"Bearer {create_key(session=s, user=user, **kw)[1]}"}


async def test_hits_carry_the_citation_fields_and_the_text(tmp_path, factory) -> None:
    store = StaticStore([make_hit(2, score=0.8, page=3), make_hit(1, score=0.7)])
    app = app_for(settings_for(tmp_path, auth={"enabled": False}), factory, store)
    async with client(app) as c:
        r = await c.post("/api/search", json={"query": "  Which facts?  "})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "Which facts?" and body["mode"] == "hybrid"
    assert body["took_ms"] >= 0
    first = body["hits"][0]
    assert first == {
        "n": 1, "chunk_id": "chunk-2", "doc_id": "doc-2", "title": "Title 2",
        "source": "/docs/file2.pdf", "page": 3, "start_char": 20,
        "end_char": 20 + len("Fact number 2 is written here."),
        "snippet": "Fact number 2 is written here.", "score": 0.8, "chunk_ids": ["chunk-2"],
        "text": "Fact number 2 is written here.", "headings": []}
    assert [h["n"] for h in body["hits"]] == [1, 2]
    # The configured search: top_k 5, hybrid, the query embedded and sent as text.
    [search] = store.searches
    assert (search["top_k"], search["mode"], search["text"]) == (5, "hybrid", "Which facts?")


async def test_top_k_mode_and_filters_reach_the_store_and_narrow_only(tmp_path, factory) -> None:
    store, embedder = StaticStore([make_hit(n) for n in range(1, 6)]), ConstantEmbedder()
    app = app_for(settings_for(tmp_path, auth={"enabled": False}), factory, store, embedder)
    async with client(app) as c:
        r = await c.post("/api/search", json={
            "query": "q", "top_k": 2, "mode": "sparse",
            "filters": {"tags": ["policy"], "doc_ids": ["doc-1", "doc-2"],
                        "modified_after": "2026-01-01T00:00:00Z"}})
    assert r.status_code == 200, r.text
    assert [h["chunk_id"] for h in r.json()["hits"]] == ["chunk-1", "chunk-2"]
    assert r.json()["mode"] == "sparse"
    [search] = store.searches
    assert (search["top_k"], search["mode"]) == (2, "sparse")
    flt = search["filter"]
    assert (flt.tags, flt.doc_ids, flt.modified_after) == (["policy"], ["doc-1", "doc-2"],
                                                          1767225600.0)
    # The caller is always in the filter (auth off: the anonymous admin of "default").
    assert flt.caller == Principal(tenant="default", is_admin=True) and flt.tenant is None
    assert embedder.queries == []  # sparse: BM25 only, no query embedding


async def test_the_same_sources_as_the_chat_min_score_and_packing_included(tmp_path,
                                                                           factory) -> None:
    first = make_hit(1, score=0.9, text="The Zephyr code is ZX-4471 on every timesheet.")
    # The next chunk of the same document: packing merges it into hit 1.
    second = replace(make_hit(1, score=0.8, text="Timesheets are due on Fridays."),
                     chunk_id="chunk-1b", chunk_index=1, start_char=first.end_char,
                     end_char=first.end_char + 30)
    duplicate = replace(first, chunk_id="chunk-9", doc_id="doc-9", score=0.7)
    low = make_hit(3, score=0.1)
    store = StaticStore([first, second, duplicate, make_hit(2, score=0.5), low])
    settings = settings_for(tmp_path, auth={"enabled": False}, retrieval={"min_score": 0.2})
    app = app_for(settings, factory, store)
    async with client(app) as c:
        chat = await c.post("/api/chat", json={"question": "Zephyr code?", "stream": False})
        found = await c.post("/api/search", json={"query": "Zephyr code?"})
    assert chat.status_code == 200 and found.status_code == 200, (chat.text, found.text)
    hits = found.json()["hits"]
    assert [h["chunk_ids"] for h in hits] == [["chunk-1", "chunk-1b"], ["chunk-2"]]
    assert hits[0]["text"].startswith("The Zephyr code") and "Fridays" in hits[0]["text"]
    fields = ("n", "chunk_id", "doc_id", "title", "source", "page", "start_char", "end_char",
              "snippet", "score", "chunk_ids")
    assert [{f: h[f] for f in fields} for h in hits] == [
        {f: s[f] for f in fields} for s in chat.json()["sources"]]


async def test_a_user_finds_only_what_the_key_may_see(tmp_path, factory) -> None:
    hits = [make_hit(1), make_hit(2), make_hit(3)]
    store = AclStore(hits, {"doc-1": ("acme", ["*"]), "doc-2": ("acme", ["group:board"]),
                            "doc-3": ("globex", ["*"])})
    app = app_for(settings_for(tmp_path), factory, store)
    board = key(factory, "bo", groups=["board"], tenant="acme")
    eng = key(factory, "ana", groups=["eng"], tenant="acme")
    globex = key(factory, "gus", groups=["board"], tenant="globex")
    async with client(app) as c:
        async def docs(headers: dict[str, str], **body: Any) -> list[str]:
            r = await c.post("/api/search", headers=headers, json={"query": "q", **body})
            assert r.status_code == 200, r.text
            return [h["doc_id"] for h in r.json()["hits"]]

        assert await docs(board) == ["doc-1", "doc-2"]
        # Same tenant, not in the group: the board's document is not found.
        assert await docs(eng) == ["doc-1"]
        # Filters narrow, never widen: naming the hidden document finds nothing.
        assert await docs(eng, filters={"doc_ids": ["doc-2"]}) == []
        # Another tenant sees none of acme's, whatever its groups.
        assert await docs(globex) == ["doc-3"]
        r = await c.post("/api/search", headers=eng,
                         json={"query": "q", "filters": {"tenant": "globex"}})
        assert r.status_code == 422
        assert r.json()["error"]["message"] == "filters.tenant: Extra inputs are not permitted"
    assert [s["filter"].caller for s in store.searches][:2] == [
        Principal(tenant="acme", user="bo", groups=("board",)),
        Principal(tenant="acme", user="ana", groups=("eng",))]


async def test_no_key_is_401_and_the_key_rate_limit_applies(tmp_path, factory) -> None:
    settings = settings_for(tmp_path, auth={"rate_limit_per_minute": 6, "rate_limit_burst": 2})
    app = app_for(settings, factory, StaticStore([make_hit(1)]))
    ana = key(factory, "ana")
    async with client(app) as c:
        r = await c.post("/api/search", json={"query": "q"})
        assert r.status_code == 401 and "missing API key" in r.json()["error"]["message"]
        codes = [(await c.post("/api/search", headers=ana, json={"query": "q"})).status_code
                 for _ in range(2)]
        refused = await c.post("/api/search", headers=ana, json={"query": "q"})
    assert codes == [200, 200]
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"query": "   "}, 400, "the query is empty"),
    ({"query": "x" * 4001}, 400, "the query has 4001 characters; the limit is 4000"),
    ({}, 422, "query: Field required"),
    ({"query": ""}, 422, "query: String should have at least 1 character"),
    ({"query": "q", "top_k": 0}, 422, "top_k: Input should be greater than or equal to 1"),
    ({"query": "q", "top_k": 51}, 422, "top_k: Input should be less than or equal to 50"),
    ({"query": "q", "mode": "fuzzy"}, 422, "mode: Input should be 'dense', 'sparse' or 'hybrid'"),
    ({"query": "q", "filters": {"tags": "policy"}}, 422,
     "filters.tags: Input should be a valid list"),
    ({"query": "q", "question": "q"}, 422, "question: Extra inputs are not permitted"),
])
async def test_invalid_requests_say_what_is_wrong(tmp_path, factory, body, status,
                                                  message) -> None:
    store = StaticStore([make_hit(1)])
    settings = settings_for(tmp_path, auth={"enabled": False}, api={"max_question_chars": 4000})
    async with client(app_for(settings, factory, store)) as c:
        r = await c.post("/api/search", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"] == message
    assert r.json()["error"]["code"] == "invalid_input"
    assert store.searches == []


async def test_a_failing_store_is_503_without_its_details(tmp_path, factory) -> None:
    class BrokenStore(StaticStore):
        def search(self, *args: Any, **kwargs: Any) -> list[SearchHit]:
            raise ConnectionError("qdrant at 10.0.0.7:6333 refused")

    app = app_for(settings_for(tmp_path, auth={"enabled": False}), factory, BrokenStore())
    async with client(app) as c:
        r = await c.post("/api/search", json={"query": "q"})
    assert r.status_code == 503
    assert r.json()["error"] == {
        "message": "searching the indexed documents failed; try again later",
        "type": "UnavailableError", "code": "unavailable"}


def test_the_route_is_documented_with_examples() -> None:
    schema = create_app(Settings(env="test")).openapi()
    post = schema["paths"]["/api/search"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/SearchRequest")
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/SearchResponse")
    assert post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorEnvelope")
    components = schema["components"]["schemas"]
    assert components["SearchRequest"]["examples"][0]["filters"] == {"tags": ["policy"]}
    assert components["SearchResponse"]["examples"][0]["hits"][0]["chunk_ids"]
    assert "retrieval.mode" in components["SearchRequest"]["properties"]["mode"]["description"]
