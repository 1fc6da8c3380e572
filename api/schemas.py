"""Request and response bodies of the REST API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from assistant.request import AnswerRequest, RetrievalSpec, ToolSpec
from assistant.run import source_of
from assistant.schemas import SOURCE_EXAMPLE, Source
from assistant.service import MAX_TOP_K
from assistant.tools import tool_choice_for
from retrieval.store import SearchFilter, SearchMode
from sirocco.types import ChatMessage, SearchHit


class ChatFilters(BaseModel):
    """Narrow retrieval; each list keeps chunks matching any of its values.
    Access control is applied on top and cannot be widened here."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"tags": ["policy"], "mime_types": ["application/pdf"],
         "modified_after": "2026-01-01T00:00:00Z"}]})

    source_ids: list[str] | None = Field(default=None, max_length=100)
    doc_ids: list[str] | None = Field(default=None, max_length=1000)
    mime_types: list[str] | None = Field(default=None, max_length=50)
    tags: list[str] | None = Field(default=None, max_length=100)
    modified_after: datetime | None = None
    modified_before: datetime | None = None

    def to_search_filter(self) -> SearchFilter:
        def ts(d: datetime | None) -> float | None:
            return None if d is None else d.timestamp()

        return SearchFilter(source_ids=self.source_ids, doc_ids=self.doc_ids,
                            mime_types=self.mime_types, tags=self.tags,
                            modified_after=ts(self.modified_after),
                            modified_before=ts(self.modified_before))


class ChatRequest(BaseModel):
    """A question for ``POST /api/chat``. With ``conversation_id`` the earlier
    turns of that conversation (the caller's own) are the history, and the new
    turn is stored in it; without one a new conversation is started (its id
    comes back in the ``done`` event / the result)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"question": "Which class do I book for a 4-hour flight?", "stream": False},
        {"question": "And for contractors?", "conversation_id": "5b1d3c0e-8f2a-4c55-9a77",
         "top_k": 5, "filters": {"tags": ["policy"]}},
        {"question": "Find the latest parking rules", "tools": ["search_documents"],
         "tool_choice": "required", "stream": False}]})

    question: str = Field(min_length=1, max_length=8000)
    conversation_id: str | None = Field(default=None, min_length=1, max_length=64,
                                        pattern=r"^[A-Za-z0-9._:-]+$")
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    #: False: one JSON body (``AnswerResult``) instead of server-sent events.
    stream: bool = True
    filters: ChatFilters | None = None
    #: The user agrees that this exchange may become training data (None: the
    #: server's default, ``traces.default_consent``).
    consent: bool | None = None
    #: Server tools the model may call (``search_documents``, ``get_document``,
    #: ``list_sources`` and the configured HTTP tools the caller may use);
    #: None: ``assistant.default_tools``.
    tools: list[str] | None = Field(default=None, max_length=16)
    #: "auto" (default), "required", or a tool name to force on the first turn.
    tool_choice: str | None = Field(default=None, max_length=64)

    def to_answer_request(self, *, conversation_id: str, history: Sequence[ChatMessage],
                          default_tools: Sequence[str]) -> AnswerRequest:
        """This request in the assistant's terms: ``history`` is the stored
        conversation's, ``default_tools`` the server tools offered when the
        request names none (``assistant.default_tools``)."""
        tools = list(self.tools if self.tools is not None else default_tools)
        return AnswerRequest.of(
            self.question, history=history, conversation_id=conversation_id,
            consent=self.consent,
            retrieval=RetrievalSpec(top_k=self.top_k, filters=self.filters.to_search_filter()
                                    if self.filters is not None else None),
            tools=ToolSpec(server=tuple(tools), choice=tool_choice_for(self.tool_choice, tools)))


class SearchRequest(BaseModel):
    """A query for ``POST /api/search``: retrieval only, as the chat retrieves
    (within the caller's tenant and document ACL, which ``filters`` only narrow)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "Which class do I book for a 4-hour flight?", "top_k": 5,
         "filters": {"tags": ["policy"]}},
        {"query": "ZX-4471", "mode": "sparse"}]})

    query: str = Field(min_length=1, max_length=8000, description="What to search for.")
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K, description=(
        "Chunks to retrieve (None: the server's retrieval.top_k); the hits are at most as "
        "many, fewer when adjacent chunks of a document were merged into one hit."))
    filters: ChatFilters | None = None
    mode: SearchMode | None = Field(default=None, description=(
        "dense (embeddings), sparse (BM25) or hybrid; None: the server's retrieval.mode."))

    def to_retrieval_spec(self) -> RetrievalSpec:
        """This request in the assistant's terms."""
        return RetrievalSpec(top_k=self.top_k, mode=self.mode,
                             filters=self.filters.to_search_filter()
                             if self.filters is not None else None)


SEARCH_HIT_EXAMPLE: dict[str, Any] = {
    **SOURCE_EXAMPLE, "headings": ["Travel", "Flights"],
    "text": "Economy class is required for flights under 6 hours. Business class..."}


class SearchHitPublic(Source):
    """One hit of ``POST /api/search``: a source as the chat's ``sources`` give
    it (``n`` its rank; citation fields: ids, title, display path, page,
    character offsets, ``snippet``, ``score``, ``chunk_ids``), with the whole
    ``text`` of the chunks it stands for and their ``headings``."""

    model_config = ConfigDict(json_schema_extra={"examples": [SEARCH_HIT_EXAMPLE]})

    text: str
    headings: list[str] = []

    @classmethod
    def of(cls, n: int, hit: SearchHit) -> SearchHitPublic:
        """Hit number ``n`` (1-based rank)."""
        return cls(**source_of(n, hit).model_dump(), text=hit.text, headings=list(hit.headings))


class SearchResponse(BaseModel):
    """The hits of ``POST /api/search``, best first."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "hits": [SEARCH_HIT_EXAMPLE],
        "query": "Which class do I book for a 4-hour flight?", "mode": "hybrid",
        "took_ms": 41.7}]})

    hits: list[SearchHitPublic]
    #: The query as searched (stripped).
    query: str
    #: The search mode used.
    mode: SearchMode
    #: Time the search took in the server, in milliseconds.
    took_ms: float


class ConversationRename(BaseModel):
    """A new title for one of the caller's conversations."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"title": "Travel: booking classes"}]})

    title: str = Field(min_length=1, max_length=120)


ACCEPTED_EXAMPLE: dict[str, Any] = {
    "id": "3f0c2a9e-1b7d-4c1e-9d55-0a1b2c3d4e5f", "status": "queued", "title": "travel-policy",
    "filename": "travel-policy.pdf"}


class AcceptedDocument(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [ACCEPTED_EXAMPLE]})

    id: str
    status: str
    title: str
    filename: str


class UploadAccepted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"documents": [ACCEPTED_EXAMPLE], "job_id": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"}]})

    documents: list[AcceptedDocument]
    #: The upload's ingestion job (``GET /api/jobs/{id}``); None when nothing was queued.
    job_id: str | None = None


class DocumentStatus(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "3f0c2a9e-1b7d-4c1e-9d55-0a1b2c3d4e5f", "title": "travel-policy", "status": "done",
        "error": None, "chunk_count": 12, "created_at": "2026-11-23T09:00:00Z",
        "updated_at": "2026-11-23T09:00:41Z"}]})

    id: str
    title: str
    status: str
    error: str | None
    chunk_count: int
    created_at: datetime
    updated_at: datetime

    @field_validator("created_at", "updated_at")
    @classmethod
    def _assume_utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class JobItemPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "document_id": "3f0c2a9e-1b7d-4c1e-9d55-0a1b2c3d4e5f", "path": "/srv/handbook/travel.pdf",
        "filename": "travel.pdf", "state": "failed", "error": "encrypted PDF", "attempts": 1}]})

    document_id: str
    path: str
    filename: str
    state: str
    error: str | None
    attempts: int


class JobPublic(BaseModel):
    """A job's state and counts; ``progress`` is the finished share, 0 to 1."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d", "tenant": "default", "kind": "sync",
        "source_id": "5d1c0e7a-2b3c-4d5e-8f9a-0b1c2d3e4f5a", "state": "running",
        "created_by": None, "total": 40, "done": 31, "failed": 1, "skipped": 6, "cancelled": 0,
        "removed": 0, "progress": 0.95, "created_at": "2026-11-23T09:00:00Z",
        "started_at": "2026-11-23T09:00:01Z", "finished_at": None, "items": []}]})

    id: str
    tenant: str
    kind: str
    source_id: str | None
    state: str
    #: The user whose upload made the job (None for syncs and CLI runs).
    created_by: str | None = None
    total: int
    done: int
    failed: int
    skipped: int
    cancelled: int
    removed: int
    progress: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    items: list[JobItemPublic] = []


_NAMES: Any = Field(default_factory=list, max_length=100)


class SourceCreate(BaseModel):
    """A folder on the server. With no ``users`` and no ``groups`` its documents
    are visible to everyone in the tenant; else only to those named."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"path": "/srv/handbook", "name": "handbook", "groups": ["hr"], "tags": ["policy"]}]})

    # No NUL: the OS refuses such paths (it was a 500 before; found by the fuzz test).
    path: str = Field(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")
    name: str | None = Field(default=None, max_length=255)
    users: list[str] = _NAMES
    groups: list[str] = _NAMES
    tags: list[str] = _NAMES


class SourceAccess(BaseModel):
    """Who may see a source's documents (no users and no groups: everyone in
    the tenant) and their tags. Applied to the indexed chunks at once."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"groups": ["hr"], "users": [], "tags": ["policy"]}]})

    users: list[str] = _NAMES
    groups: list[str] = _NAMES
    tags: list[str] = _NAMES


class SourcePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "5d1c0e7a-2b3c-4d5e-8f9a-0b1c2d3e4f5a", "tenant": "default", "name": "handbook",
        "kind": "folder", "path": "/srv/handbook", "acl": ["group:hr"], "tags": ["policy"],
        "created_at": "2026-11-23T08:00:00Z", "documents": 40}]})

    id: str
    tenant: str
    name: str
    kind: str
    path: str | None
    acl: list[str] | None = None
    tags: list[str] | None = None
    created_at: datetime
    documents: int = 0


class KeyCreate(BaseModel):
    """A new API key for ``user`` of the admin's tenant; ``groups``, when given,
    become the user's groups."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"user": "ana", "groups": ["hr", "eng"], "name": "ana's laptop"}]})

    user: str = Field(min_length=1, max_length=255)
    groups: list[str] | None = Field(default=None, max_length=100)
    admin: bool = False
    name: str | None = Field(default=None, max_length=255)


KEY_EXAMPLE: dict[str, Any] = {
    "id": "7e6d5c4b-3a29-4817-a6b5-c4d3e2f1a0b9", "prefix": "sk-sirocco-ab12",
    "tenant": "default", "user": "ana", "groups": ["hr", "eng"], "is_admin": False,
    "name": "ana's laptop", "created_at": "2026-11-23T08:00:00Z", "revoked_at": None}


class KeyPublic(BaseModel):
    """An API key as listings show it: its visible ``prefix``, never the key."""

    model_config = ConfigDict(from_attributes=True,
                              json_schema_extra={"examples": [KEY_EXAMPLE]})

    id: str
    prefix: str
    tenant: str
    user: str
    groups: list[str]
    is_admin: bool
    name: str | None
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    """The new key, shown this once (only its hash is stored)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {**KEY_EXAMPLE, "key": "sk-sirocco-ab12...(shown once)"}]})

    key: str


class ErrorBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"message": "document '3f0c' not found", "type": "NotFoundError", "code": "not_found"}]})

    message: str
    type: str
    code: str


class ErrorEnvelope(BaseModel):
    """Every error of the native API (``/api/...``): one ``error`` object."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": {"message": "missing API key: send 'Authorization: Bearer <key>'",
                   "type": "AuthenticationError", "code": "invalid_api_key"}}]})

    error: ErrorBody


#: The error responses every native route may give, for the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": what} for status, what in (
        (400, "Invalid input"),
        (401, "Missing, unknown or revoked API key"),
        (403, "The key may not do this (admin only)"),
        (404, "Not found, or not visible to the caller"),
        (422, "The request body or parameters do not match the schema"),
        (429, "Rate limit of the key, or the server at capacity (see Retry-After)"),
        (503, "A backing service is unavailable; try again"),
    )
}
