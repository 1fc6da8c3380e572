"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from assistant.service import MAX_TOP_K
from retrieval.store import SearchFilter


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
    question: str = Field(min_length=1, max_length=8000)
    conversation_id: str | None = Field(default=None, max_length=64)
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    #: False: one JSON body (``AnswerResult``) instead of server-sent events.
    stream: bool = True
    filters: ChatFilters | None = None


class AcceptedDocument(BaseModel):
    id: str
    status: str
    title: str
    filename: str


class UploadAccepted(BaseModel):
    documents: list[AcceptedDocument]
    #: The upload's ingestion job (``GET /api/jobs/{id}``); None when nothing was queued.
    job_id: str | None = None


class DocumentStatus(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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
    model_config = ConfigDict(from_attributes=True)

    document_id: str
    path: str
    filename: str
    state: str
    error: str | None
    attempts: int


class JobPublic(BaseModel):
    """A job's state and counts; ``progress`` is the finished share, 0 to 1."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant: str
    kind: str
    source_id: str | None
    state: str
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


_NAMES = Field(default_factory=list, max_length=100)


class SourceCreate(BaseModel):
    """A folder on the server. With no ``users`` and no ``groups`` its documents
    are visible to everyone in the tenant; else only to those named."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"path": "/srv/handbook", "name": "handbook", "groups": ["hr"], "tags": ["policy"]}]})

    path: str = Field(min_length=1)
    name: str | None = Field(default=None, max_length=255)
    users: list[str] = _NAMES
    groups: list[str] = _NAMES
    tags: list[str] = _NAMES


class SourcePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant: str
    name: str
    kind: str
    path: str | None
    acl: list[str] | None = None
    tags: list[str] | None = None
    created_at: datetime
    documents: int = 0
