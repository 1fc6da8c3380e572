"""The LangChain retriever (``api.client.langchain``): the request it sends,
the Documents it makes, errors; through the real API app (doubles behind it)
asynchronously, and over a recording transport synchronously. It imports
nothing of the server. Against a running server, with LangChain's standard
retriever tests: tests/e2e/test_e2e_search_langchain.py."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

import assistant.conversations  # noqa: F401
import ingest.models  # noqa: F401
import sirocco.auth.models  # noqa: F401
from api.client.langchain import SiroccoRetriever, SiroccoSearchError
from sirocco.db import Base, make_engine, make_session_factory
from sirocco.settings import Settings
from tests.doubles import StaticStore, make_hit
from tests.structure import PACKAGES, REPO
from tests.unit.test_api_search import app_for, key

HIT = {"n": 1, "chunk_id": "c-1", "doc_id": "d-1", "title": "Travel policy",
       "source": "handbook/travel.md", "page": None, "start_char": 0, "end_char": 40,
       "snippet": "Hotels up to 180 EUR.", "score": 0.7, "chunk_ids": ["c-1"],
       "text": "Hotels are reimbursed up to 180 EUR per night.", "headings": ["Travel"]}


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(Settings(env="test", data_dir=tmp_path))
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def recording(status: int = 200, body: Any = None, headers: dict[str, str] | None = None
              ) -> tuple[httpx.Client, list[httpx.Request]]:
    """A client whose every request is recorded and answered with ``body``."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        content = body if body is not None else {"hits": [HIT], "query": "q", "mode": "hybrid",
                                                  "took_ms": 1.0}
        if isinstance(content, str):
            return httpx.Response(status, text=content, headers=headers)
        return httpx.Response(status, json=content, headers=headers)

    return httpx.Client(transport=httpx.MockTransport(answer)), seen


def test_documents_carry_the_text_and_the_citation_fields() -> None:
    http, seen = recording()
    retriever = SiroccoRetriever(base_url="http://sirocco:8000/", api_key="sk-sirocco-x",
                                 http_client=http)
    [doc] = retriever.invoke("hotel costs")
    assert isinstance(doc, Document)
    assert doc.page_content == HIT["text"] and doc.id == "c-1"
    assert doc.metadata == {k: v for k, v in HIT.items() if k != "text"}
    [request] = seen
    assert str(request.url) == "http://sirocco:8000/api/search"
    assert request.headers["authorization"] == "Bearer sk-sirocco-x"
    assert json.loads(request.content) == {"query": "hotel costs"}


def test_k_top_k_filters_and_mode_from_the_retriever_or_the_call() -> None:
    http, seen = recording()
    retriever = SiroccoRetriever(api_key="k", k=3, filters={"tags": ["policy"]}, mode="dense",
                                 http_client=http)
    assert retriever.top_k == 3 and SiroccoRetriever(top_k=4).top_k == 4
    retriever.invoke("q")
    retriever.invoke("q", k=1, filters={"doc_ids": ["d-1"]}, mode="sparse")
    retriever.invoke("q", top_k=2)
    assert [json.loads(r.content) for r in seen] == [
        {"query": "q", "top_k": 3, "filters": {"tags": ["policy"]}, "mode": "dense"},
        {"query": "q", "top_k": 1, "filters": {"doc_ids": ["d-1"]}, "mode": "sparse"},
        {"query": "q", "top_k": 2, "filters": {"tags": ["policy"]}, "mode": "dense"}]
    with pytest.raises(ValueError, match=r"k \(1\) and top_k \(2\) disagree"):
        retriever.invoke("q", k=1, top_k=2)


def test_bad_settings_are_refused_when_the_retriever_is_made() -> None:
    for bad in ({"k": 0}, {"top_k": 51}, {"mode": "fuzzy"}, {"api_kye": "x"}):
        with pytest.raises(ValidationError):
            SiroccoRetriever(**bad)
    # The key never shows in the retriever's repr (logs, tracebacks).
    assert "sk-sirocco-secret" not in repr(SiroccoRetriever(api_key="sk-sirocco-secret"))


def test_server_errors_raise_with_the_servers_message_and_code() -> None:
    envelope = {"error": {"message": "rate limit exceeded for this API key; retry in 2.0 s",
                          "type": "RateLimitedError", "code": "rate_limit_exceeded"}}
    http, _ = recording(429, envelope, {"Retry-After": "2"})
    with pytest.raises(SiroccoSearchError) as refused:
        SiroccoRetriever(api_key="k", http_client=http).invoke("q")
    assert (refused.value.status, refused.value.code, refused.value.retry_after) == (
        429, "rate_limit_exceeded", 2.0)
    assert str(refused.value) == ("Sirocco search failed (429): rate limit exceeded for this "
                                  "API key; retry in 2.0 s")
    http, _ = recording(502, "<html>Bad gateway</html>\n<p>nginx</p>")
    with pytest.raises(SiroccoSearchError, match=r"\(502\): <html>Bad gateway</html>$"):
        SiroccoRetriever(http_client=http).invoke("q")


async def test_async_through_the_api_with_the_keys_acl(tmp_path, factory) -> None:
    store = StaticStore([make_hit(1), make_hit(2), make_hit(3)])
    app = app_for(Settings(env="test", data_dir=tmp_path), factory, store)
    ana = key(factory, "ana", groups=["eng"], tenant="acme")["Authorization"].split()[1]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as http:
        retriever = SiroccoRetriever(base_url="http://test", api_key=ana, k=2,
                                     filters={"tags": ["policy"]}, http_async_client=http)
        docs = await retriever.ainvoke("Which facts?")
        one = await retriever.ainvoke("Which facts?", k=1)
        with pytest.raises(SiroccoSearchError) as refused:
            await SiroccoRetriever(base_url="http://test", api_key="sk-sirocco-nope",
                                   http_async_client=http).ainvoke("q")
        with pytest.raises(SiroccoSearchError) as invalid:
            await retriever.ainvoke("q", filters={"tenant": "globex"})
    assert [d.metadata["chunk_id"] for d in docs] == ["chunk-1", "chunk-2"] and len(one) == 1
    assert docs[0].page_content == "Fact number 1 is written here."
    assert docs[0].metadata["source"] == "/docs/file1.pdf" and docs[0].metadata["n"] == 1
    flt = store.searches[0]["filter"]
    assert (flt.caller.tenant, flt.caller.user, flt.caller.groups, flt.tags) == (
        "acme", "ana", ("eng",), ["policy"])
    assert (refused.value.status, refused.value.code) == (401, "invalid_api_key")
    assert refused.value.message == "invalid API key"
    assert (invalid.value.status, invalid.value.message) == (
        422, "filters.tenant: Extra inputs are not permitted")


def test_the_client_imports_nothing_of_the_server() -> None:
    ours = set(PACKAGES)
    for path in (REPO / "api" / "client").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.startswith("api.client") or name.split(".")[0] not in ours, (
                    path, name)
