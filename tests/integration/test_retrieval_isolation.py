"""Access control at retrieval: two tenants, three groups, users with different
memberships. Every query, in every search mode, returns only chunks of
documents the caller may see (checked against the ACLs in SQL), and the
filter is applied inside Qdrant: a caller still gets its full top_k when
forbidden chunks would have ranked first."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import ingest.models  # noqa: F401
from ingest.embedder import create_embedder
from ingest.models import Document
from ingest.pipeline import ingest_document
from ingest.service import Access, register_files
from retrieval.qdrant_store import QdrantStore
from retrieval.store import SEARCH_MODES, Caller, SearchFilter
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.settings import Settings
from sirocco.types import EVERYONE, group_principal, user_principal

pytestmark = pytest.mark.integration

TEXT = "Salary bands for {who} are reviewed every March; bonus rules for {who} follow in June."
# tenant -> folder -> access
LAYOUT = {
    "acme": {"all": Access.of(), "hr": Access.of(groups=["hr"]), "eng": Access.of(groups=["eng"]),
             "board": Access.of(groups=["board"]), "ana": Access.of(users=["ana"])},
    "globex": {"all": Access.of(), "hr": Access.of(groups=["hr"])},
}
CALLERS = [Caller("acme"), Caller("acme", user="ana"), Caller("acme", user="bo", groups=("hr",)),
           Caller("acme", user="cy", groups=("eng", "board")), Caller("globex", user="ana",
                                                                     groups=("hr", "eng"))]
QUERIES = ["salary bands review", "When are bonus rules decided?", "board salary March",
           "human resources pay policy", "engineering bonus"]


def _may_see(caller: Caller, doc: Document) -> bool:
    acl = doc.acl or [EVERYONE]
    mine = {EVERYONE, *(group_principal(g) for g in caller.groups)}
    if caller.user:
        mine.add(user_principal(caller.user))
    return doc.tenant == caller.tenant and bool(mine & set(acl))


def test_no_query_returns_a_chunk_the_caller_may_not_see(tmp_path: Path):
    settings = Settings(env="test", data_dir=tmp_path / "var",
                        qdrant={"path": str(tmp_path / "qdrant"), "collection": "iso"})
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
    store = QdrantStore(settings)
    for doc_id in ids:
        assert ingest_document(doc_id, session_factory=factory, embedder=embedder, store=store,
                               settings=settings) > 0
    with session_scope(factory) as s:
        docs = {d.id: d for d in s.query(Document)}

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
