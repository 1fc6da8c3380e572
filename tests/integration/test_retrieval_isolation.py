"""Access control at retrieval: two tenants, three groups, users with different
memberships. Every query, in every search mode, returns only chunks of
documents the caller may see (checked against the ACLs in SQL), and the
filter is applied inside Qdrant: a caller still gets its full top_k when
forbidden chunks would have ranked first. The same holds end to end: callers
holding API keys for those tenants/users/groups ask through ``/api/chat`` and
``/v1/chat/completions`` (the real vLLM engine answering) and no source or
citation names a document they may not see."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

import assistant.conversations  # noqa: F401  (/api/chat stores turns)
import ingest.models  # noqa: F401
import sirocco.auth.models  # noqa: F401  (API keys: created with the other tables)
from ingest.embed_stage import ingest_document
from ingest.embedding.base import create_embedder
from ingest.models import Document
from ingest.service import Access, register_files
from retrieval.factory import create_store
from retrieval.store import SEARCH_MODES, Principal, SearchFilter, Store
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.settings import Settings
from sirocco.types import EVERYONE, group_acl_entry, user_acl_entry

pytestmark = pytest.mark.integration

TEXT = "Salary bands for {who} are reviewed every March; bonus rules for {who} follow in June."
# tenant -> folder -> access
LAYOUT = {
    "acme": {"all": Access.of(), "hr": Access.of(groups=["hr"]), "eng": Access.of(groups=["eng"]),
             "board": Access.of(groups=["board"]), "ana": Access.of(users=["ana"])},
    "globex": {"all": Access.of(), "hr": Access.of(groups=["hr"])},
}
CALLERS = [Principal("acme"), Principal("acme", user="ana"),
           Principal("acme", user="bo", groups=("hr",)),
           Principal("acme", user="cy", groups=("eng", "board")),
           Principal("globex", user="ana", groups=("hr", "eng"))]
QUERIES = ["salary bands review", "When are bonus rules decided?", "board salary March",
           "human resources pay policy", "engineering bonus"]


def _may_see(caller: Principal, doc: Document) -> bool:
    acl = doc.acl or [EVERYONE]
    mine = {EVERYONE, *(group_acl_entry(g) for g in caller.groups)}
    if caller.user:
        mine.add(user_acl_entry(caller.user))
    return doc.tenant == caller.tenant and bool(mine & set(acl))


@dataclass
class Corpus:
    settings: Settings
    factory: sessionmaker[Session]
    embedder: Any
    store: Store
    docs: dict[str, Document]


@pytest.fixture(scope="module", params=["edge", "local"])
def corpus(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    """Both tenants' folders, ingested (real parser, embedder, each embedded Qdrant engine)."""
    tmp_path = tmp_path_factory.mktemp("isolation")
    settings = Settings(env="test", data_dir=tmp_path / "var",
                        qdrant={"path": str(tmp_path / "qdrant"), "collection": "iso",
                                "engine": request.param})
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    ids: list[str] = []
    for tenant, folders in LAYOUT.items():
        for name, access in folders.items():
            folder = tmp_path / tenant / name
            folder.mkdir(parents=True)
            for i in range(2):
                (folder / f"{name}-{i}.md").write_text(
                    f"# {name} {i}\n\n" + TEXT.format(who=f"{tenant} {name} team {i}"))
            with session_scope(factory) as s:
                ids += [d.id for d in register_files([folder], session=s, tenant=tenant,
                                                     access=access)]
    embedder = create_embedder(settings)
    store = create_store(settings)
    for doc_id in ids:
        assert ingest_document(doc_id, session_factory=factory, embedder=embedder, store=store,
                               settings=settings) > 0
    with session_scope(factory) as s:
        docs = {d.id: d for d in s.query(Document)}
    yield Corpus(settings, factory, embedder, store, docs)
    store.close()
    engine.dispose()


def test_no_query_returns_a_chunk_the_caller_may_not_see(corpus: Corpus):
    store, embedder, docs = corpus.store, corpus.embedder, corpus.docs
    checked = 0
    with store.hold():
        for caller, query, mode in itertools.product(CALLERS, QUERIES, SEARCH_MODES):
            visible = {i for i, d in docs.items() if _may_see(caller, d)}
            hits = store.search(embedder.embed_query(query), top_k=len(visible) + 5,
                                text=query, mode=mode, filter=SearchFilter(caller=caller))
            leaked = {h.doc_id for h in hits} - visible
            assert not leaked, (caller, query, mode, [docs[i].source_path for i in leaked])
            # Filtered inside Qdrant: everything visible and matching comes back.
            if mode == "dense":
                assert {h.doc_id for h in hits} == visible, (caller, mode)
            checked += len(hits)
    assert checked > 200


@pytest.mark.parametrize("corpus", ["edge"], indirect=True)  # the default engine
async def test_chat_and_openai_endpoints_cite_only_visible_documents(
    corpus: Corpus, vllm_engine: Any, engine_settings: Settings
) -> None:
    from api.app import create_app
    from api.services import Services
    from assistant.service import Assistant
    from sirocco.auth.keys import create_key
    from traces.recorder import TraceRecorder

    # Short answers: what is checked is which documents reach the model and the client.
    settings = corpus.settings.model_copy(update={
        "llm": engine_settings.llm.model_copy(update={"max_tokens": 4})})
    keys: list[tuple[Principal, str]] = []
    with session_scope(corpus.factory) as s:
        for caller in CALLERS:
            # A key always has a user; "nobody" is named by no ACL.
            _, raw = create_key(session=s, user=caller.user or "nobody",
                                groups=list(caller.groups), tenant=caller.tenant)
            keys.append((caller, raw))
    assistant = Assistant(vllm_engine, corpus.store, corpus.embedder,
                          TraceRecorder(corpus.factory), settings)
    services = Services(session_factory=corpus.factory, assistant=assistant, celery_app=None,
                        register_files=lambda *a, **k: [], enqueue_documents=lambda *a: None,
                        engine=vllm_engine, store=corpus.store, embedder=corpus.embedder)
    app = create_app(settings, services=services)
    checked = 0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 timeout=300) as client:
        for (caller, raw), query in itertools.product(keys, QUERIES[:3]):
            visible = {i for i, d in corpus.docs.items() if _may_see(caller, d)}
            auth = {"Authorization": f"Bearer {raw}"}
            r = await client.post("/api/chat", headers=auth, json={
                "question": query, "stream": False, "top_k": 8})
            assert r.status_code == 200, r.text
            native = r.json()
            r = await client.post("/v1/chat/completions", headers=auth, json={
                "model": vllm_engine.model_name, "max_tokens": 4, "sirocco": {"top_k": 8},
                "messages": [{"role": "user", "content": query}]})
            assert r.status_code == 200, r.text
            ext = r.json()["sirocco"]
            for where, items in [("chat sources", native["sources"]),
                                 ("chat citations", native["citations"]),
                                 ("v1 sources", ext["sources"]),
                                 ("v1 citations", ext["citations"])]:
                seen = {item["doc_id"] for item in items}
                assert not seen - visible, (where, caller, query,
                                            [corpus.docs[i].source_path for i in seen - visible])
                checked += len(items)
            assert native["sources"] and ext["sources"], (caller, query)
    assert checked > 100
