"""``POST /api/search`` and the LangChain retriever against the running server
(real engine, MiniLM embeddings, Qdrant local store, keys from the CLI):

- LangChain's standard retriever tests (``langchain-tests``:
  ``RetrieversIntegrationTests``) on ``SiroccoRetriever``;
- the key's ACL: a user outside the board group, and users of other tenants,
  get no hit of a hidden document, through the REST route and the retriever;
- the README's LangChain example (``ChatOpenAI`` beside the retriever).

Besides the conftest's three documents, tenant "acme" holds five one-chunk
travel rules tagged "policy" (so ``k`` hits are ``k`` documents: packing
merges only chunks of one document) and an HR note for group "hr" only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import RetrieversIntegrationTests

from api.client.langchain import SiroccoRetriever, SiroccoSearchError
from tests.e2e.conftest import ExtraDoc, Server, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

POLICY = ("policy",)
ACME = [
    ExtraDoc("flights.md", "# Flights\n\nEconomy class is required for flights under six "
             "hours; business class is allowed for longer flights.\n", "acme", tags=POLICY),
    ExtraDoc("trains.md", "# Trains\n\nFirst class train tickets are allowed for journeys "
             "over three hours.\n", "acme", tags=POLICY),
    ExtraDoc("hotels.md", "# Hotels\n\nHotel rooms are reimbursed up to 150 EUR per night "
             "in most cities.\n", "acme", tags=POLICY),
    ExtraDoc("meals.md", "# Meals\n\nMeals on business trips are reimbursed up to 40 EUR per "
             "day with receipts.\n", "acme", tags=POLICY),
    ExtraDoc("cars.md", "# Rental cars\n\nRental cars must be compact unless four colleagues "
             "travel together.\n", "acme", tags=POLICY),
    ExtraDoc("executives.md", "# Executive travel\n\nExecutives may book business class on "
             "every flight; the HR code for their trips is EXE-5523.\n", "acme",
             groups=("hr",)),
]
FLIGHT = "Which class do I book for a 4-hour flight?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_stack(tmp_path_factory.mktemp("e2e-search"), extra_docs=ACME) as running:
        yield running


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    """default: bo (board) sees board.md, ana (eng) does not; acme: hana (hr)
    sees executives.md, eli (eng) does not; gus: a tenant without documents."""
    return {"bo": server.new_key("--user", "bo", "--groups", "board,eng"),
            "ana": server.new_key("--user", "ana", "--groups", "eng"),
            "hana": server.new_key("--user", "hana", "--groups", "hr", "--tenant", "acme"),
            "eli": server.new_key("--user", "eli", "--groups", "eng", "--tenant", "acme"),
            "gus": server.new_key("--user", "gus", "--groups", "board,hr", "--tenant", "globex")}


def search(server: Server, key: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/api/search", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {key}"})


def hit_docs(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [h["doc_id"] for h in response.json()["hits"]]


class TestSiroccoRetrieverStandard(RetrieversIntegrationTests):
    """LangChain's standard retriever tests, as user eli of tenant acme."""

    @pytest.fixture(autouse=True)
    def _connect(self, server: Server, keys: dict[str, str]) -> None:
        self._params = {"base_url": server.base_url, "api_key": keys["eli"],
                        "filters": {"tags": ["policy"]}}

    @property
    def retriever_constructor(self) -> type[SiroccoRetriever]:
        return SiroccoRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return self._params

    @property
    def retriever_query_example(self) -> str:
        return FLIGHT


def test_search_returns_citation_fields_within_the_keys_acl(server: Server,
                                                            keys: dict[str, str]) -> None:
    board, zephyr = server.docs["board.md"], server.docs["zephyr.md"]
    query = "What is the Zephyr project budget of the board?"
    r = search(server, keys["bo"], query=query, top_k=5)
    assert board in hit_docs(r)
    hit = next(h for h in r.json()["hits"] if h["doc_id"] == board)
    assert "BRD-9911" in hit["text"] and hit["title"] == "Board minutes"
    assert hit["source"].endswith("board.md") and not hit["source"].startswith("/")
    assert hit["chunk_ids"] == [hit["chunk_id"]] and hit["end_char"] > hit["start_char"] >= 0
    assert r.json()["mode"] == "hybrid" and r.json()["took_ms"] > 0
    # Same tenant, not in the board group: no hit of the minutes, in any mode,
    # even when the filter names them.
    for mode in ("dense", "sparse", "hybrid"):
        found = hit_docs(search(server, keys["ana"], query=query, top_k=10, mode=mode))
        assert board not in found, mode
        assert zephyr in found or mode == "sparse", (mode, found)
    assert hit_docs(search(server, keys["ana"], query=query,
                           filters={"doc_ids": [board]})) == []
    assert hit_docs(search(server, keys["bo"], query=query,
                           filters={"doc_ids": [board]})) == [board]
    # Other tenants: none of the default tenant's documents.
    acme = {server.docs[d.name] for d in ACME}
    assert set(hit_docs(search(server, keys["eli"], query=query, top_k=10))) <= acme
    assert hit_docs(search(server, keys["gus"], query=query, top_k=10)) == []


def test_search_errors_from_the_real_server(server: Server, keys: dict[str, str]) -> None:
    r = httpx.post(f"{server.base_url}/api/search", json={"query": "q"}, timeout=60)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = search(server, keys["ana"], query="q", mode="semantic")
    assert r.status_code == 422
    assert r.json()["error"]["message"] == "mode: Input should be 'dense', 'sparse' or 'hybrid'"
    r = search(server, keys["ana"], query="  ")
    assert r.status_code == 400 and r.json()["error"]["message"] == "the query is empty"


async def test_the_retriever_keeps_the_keys_acl_sync_and_async(server: Server,
                                                               keys: dict[str, str]) -> None:
    hidden = server.docs["executives.md"]
    query = "Which class do executives book, and what is their HR code?"

    def retriever(who: str) -> SiroccoRetriever:
        return SiroccoRetriever(base_url=server.base_url, api_key=keys[who], k=6)

    hana = retriever("hana").invoke(query)
    assert hidden in {d.metadata["doc_id"] for d in hana}
    executive = next(d for d in hana if d.metadata["doc_id"] == hidden)
    assert "EXE-5523" in executive.page_content and executive.id == executive.metadata["chunk_id"]
    for doc in (*retriever("eli").invoke(query), *await retriever("eli").ainvoke(query)):
        assert doc.metadata["doc_id"] != hidden and "EXE-5523" not in doc.page_content
    assert await retriever("gus").ainvoke(query) == []
    assert retriever("bo").invoke(query, filters={"doc_ids": [hidden]}) == []
    with pytest.raises(SiroccoSearchError) as refused:
        SiroccoRetriever(base_url=server.base_url, api_key="sk-sirocco-nope").invoke(query)
    assert (refused.value.status, refused.value.message) == (401, "invalid API key")


def test_readme_langchain_example(server: Server, keys: dict[str, str]) -> None:
    # As README.md shows it ("From LangChain"), with this server's address and a key.
    from langchain_openai import ChatOpenAI

    key = keys["eli"]
    llm = ChatOpenAI(base_url=f"{server.base_url}/v1", api_key=key, model="sirocco",
                     max_tokens=32, timeout=600, max_retries=0)
    assert str(llm.invoke(FLIGHT).content).strip()

    retriever = SiroccoRetriever(base_url=server.base_url, api_key=key, k=4,
                                 filters={"tags": ["policy"]})
    docs = retriever.invoke(FLIGHT)
    assert len(docs) == 4 and all(isinstance(d, Document) for d in docs)
    assert docs[0].metadata["doc_id"] == server.docs["flights.md"]
    assert docs[0].metadata["title"] == "Flights"
    assert docs[0].metadata["source"].endswith("flights.md")
    assert docs[0].metadata["score"] >= docs[-1].metadata["score"]
    assert server.docs["executives.md"] not in {d.metadata["doc_id"] for d in docs}
