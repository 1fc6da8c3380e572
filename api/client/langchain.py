"""A LangChain retriever over Sirocco's ``POST /api/search``.

``SiroccoRetriever`` returns the sources Sirocco's chat would ground an answer
on (the same search, reranking, ``min_score`` and packing), as LangChain
``Document``s: ``page_content`` is the hit's text, ``metadata`` its citation
fields (``n``, ``chunk_id``, ``doc_id``, ``title``, ``source`` (display path),
``page``, ``start_char``, ``end_char``, ``snippet``, ``score``, ``chunk_ids``,
``headings``), ``id`` its chunk id. The API key decides what it may find: the
key's tenant, user and groups apply on the server, and ``filters`` only
narrow them.

It needs only ``langchain-core`` and ``httpx`` (``pip install
'sirocco[langchain]'``) and imports nothing of the server::

    retriever = SiroccoRetriever(base_url="http://127.0.0.1:8000", api_key=KEY,
                                 k=4, filters={"tags": ["policy"]})
    docs = retriever.invoke("Which class do I book for a 4-hour flight?")

Per call, ``k`` (or ``top_k``), ``filters`` and ``mode`` override the
retriever's own: ``retriever.invoke(query, k=2)``. A refusal or failure of
the server raises ``SiroccoSearchError`` with its status, message and code.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import AliasChoices, ConfigDict, Field, SecretStr

SEARCH_PATH = "/api/search"
#: The server's bound on ``top_k`` (``assistant.service.MAX_TOP_K``).
MAX_K = 50
Mode = Literal["dense", "sparse", "hybrid"]


class SiroccoSearchError(RuntimeError):
    """The server refused or failed a search: HTTP ``status``, the error's
    ``message`` and stable ``code`` (``invalid_api_key``, ``rate_limited``,
    ``invalid_input`` ...), and for 429 the seconds to wait (``retry_after``)."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"Sirocco search failed ({status}): {message}")
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after


class SiroccoRetriever(BaseRetriever):
    """Documents from a Sirocco server's ``POST /api/search`` (see the module
    docstring). ``base_url`` is the server's root (not ``/v1``)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "http://127.0.0.1:8000"
    #: An API key (``sirocco keys create``); None only for a server with auth off.
    api_key: SecretStr | None = None
    #: Chunks to retrieve (``k`` is accepted too); None: the server's retrieval.top_k.
    top_k: int | None = Field(default=None, ge=1, le=MAX_K,
                              validation_alias=AliasChoices("top_k", "k"))
    #: Narrow the search: ``tags``, ``source_ids``, ``doc_ids``, ``mime_types``,
    #: ``modified_after``, ``modified_before`` (as ``POST /api/chat`` takes them).
    filters: dict[str, Any] | None = None
    #: dense, sparse or hybrid; None: the server's retrieval.mode.
    mode: Mode | None = None
    #: Seconds for one search, connection included.
    timeout: float = 60.0
    #: Clients to send through (connection pooling, proxies, tests); None: one per call.
    http_client: httpx.Client | None = Field(default=None, exclude=True)
    http_async_client: httpx.AsyncClient | None = Field(default=None, exclude=True)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None, top_k: int | None = None, filters: dict[str, Any] | None = None,
        mode: Mode | None = None,
    ) -> list[Document]:
        body = self._body(query, k=k, top_k=top_k, filters=filters, mode=mode)
        if self.http_client is not None:
            return _documents(self.http_client.post(self._url, json=body, headers=self._headers,
                                                    timeout=self.timeout))
        with httpx.Client(timeout=self.timeout) as client:
            return _documents(client.post(self._url, json=body, headers=self._headers))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None, top_k: int | None = None, filters: dict[str, Any] | None = None,
        mode: Mode | None = None,
    ) -> list[Document]:
        body = self._body(query, k=k, top_k=top_k, filters=filters, mode=mode)
        if self.http_async_client is not None:
            return _documents(await self.http_async_client.post(
                self._url, json=body, headers=self._headers, timeout=self.timeout))
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            return _documents(await client.post(self._url, json=body, headers=self._headers))

    @property
    def _url(self) -> str:
        return self.base_url.rstrip("/") + SEARCH_PATH

    @property
    def _headers(self) -> dict[str, str]:
        if self.api_key is None:
            return {}
        return {"Authorization": f"Bearer {self.api_key.get_secret_value()}"}

    def _body(self, query: str, *, k: int | None, top_k: int | None,
              filters: dict[str, Any] | None, mode: Mode | None) -> dict[str, Any]:
        """The request body: per-call values over the retriever's own."""
        if k is not None and top_k is not None and k != top_k:
            raise ValueError(f"k ({k}) and top_k ({top_k}) disagree; pass one of them")
        body: dict[str, Any] = {"query": query}
        size = k if k is not None else top_k if top_k is not None else self.top_k
        if size is not None:
            body["top_k"] = size
        if (chosen := filters if filters is not None else self.filters) is not None:
            body["filters"] = chosen
        if (how := mode or self.mode) is not None:
            body["mode"] = how
        return body


def _documents(response: httpx.Response) -> list[Document]:
    """The hits of a search response as Documents; ``SiroccoSearchError`` for
    an error response."""
    if response.status_code != 200:
        raise _error(response)
    return [Document(page_content=hit["text"], id=hit["chunk_id"],
                     metadata={key: value for key, value in hit.items() if key != "text"})
            for hit in response.json()["hits"]]


def _error(response: httpx.Response) -> SiroccoSearchError:
    """The server's error envelope (``{"error": {"message", "type", "code"}}``)
    as an exception; a body without one (a proxy's page) keeps its first line."""
    try:
        error = response.json()["error"]
        message, code = str(error["message"]), error.get("code")
    except (ValueError, KeyError, TypeError):
        message, code = (response.text.strip().splitlines() or [response.reason_phrase])[0], None
    retry = response.headers.get("Retry-After")
    return SiroccoSearchError(response.status_code, message, code,
                              retry_after=float(retry) if retry and retry.isdigit() else None)
