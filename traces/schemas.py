"""Public (wire) schemas of traces, feedback and exports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from traces.export.request import EXPORT_FILTERS_EXAMPLE, EXPORT_REQUEST_EXAMPLE


def _utc(value: datetime | None) -> datetime | None:
    # SQLite drops the offset of timezone-aware columns; we only ever store UTC.
    if value is None or value.tzinfo:
        return value
    return value.replace(tzinfo=UTC)


# OpenAPI examples: one answer traced end to end (a retrieval, a model turn that
# called get_document, the final answer, a thumbs-up). The detail example embeds
# the others, so they are module constants shared by the models.
_TRACE_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
_DOC_ID = "3f0c2a9e-1b7d-4c1e-9d55-0a1b2c3d4e5f"
_CHUNK_ID = f"{_DOC_ID}-3"
_QUESTION = "Which class do I book for a 4-hour flight?"
_ANSWER = "Book economy: flights under 6 hours are economy class [1]."
_HASH = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

SPAN_EXAMPLE: dict[str, Any] = {
    "id": "b3f1c2d4-0e5a-4f6b-8c7d-9e0f1a2b3c4d", "parent_id": None, "kind": "retrieval",
    "name": "retrieval.search", "started_at": "2026-11-23T09:14:02.120Z",
    "ended_at": "2026-11-23T09:14:02.184Z", "duration_ms": 64, "status": "ok", "error": None,
    "attributes": {"gen_ai.operation.name": "retrieval", "gen_ai.request.top_k": 5,
                   "sirocco.retrieval.mode": "hybrid", "sirocco.retrieval.hits": 5}}
TOOL_CALL_EXAMPLE: dict[str, Any] = {
    "position": 0, "call_id": "call_8f2a1c", "name": "get_document",
    "arguments": f'{{"doc_id": "{_DOC_ID}"}}',
    "result": "Travel policy. 3.1 Economy class is required for flights under 6 hours.",
    "status": "ok", "latency_ms": 38}
MESSAGE_EXAMPLE: dict[str, Any] = {
    "position": 3, "role": "assistant", "content": _ANSWER, "tool_call_id": None,
    "tool_calls": None, "is_output": True}
CHUNK_EXAMPLE: dict[str, Any] = {
    "rank": 1, "chunk_id": _CHUNK_ID, "doc_id": _DOC_ID, "score": 0.81, "rerank_score": 0.93,
    "in_prompt": True, "cited": True,
    "text": "3.1 Economy class is required for flights under 6 hours."}
FEEDBACK_EXAMPLE: dict[str, Any] = {
    "id": "e2a4c6b8-1d3f-4a5c-8e7b-6f5d4c3b2a19", "trace_id": _TRACE_ID,
    "created_at": "2026-11-23T09:15:30Z", "source": "user", "thumbs": 1, "rating": 5,
    "reason": "accurate", "comment": "Exactly the rule I was looking for.", "correction": None,
    "review_status": "approved", "reviewed_by": _HASH, "reviewed_at": "2026-11-24T10:02:00Z",
    "review_note": "Correct and cited; keep for SFT."}
TRACE_EXAMPLE: dict[str, Any] = {
    "id": _TRACE_ID, "created_at": "2026-11-23T09:14:02Z",
    "conversation_id": "5b1d3c0e-8f2a-4c55-9a77", "tenant": "acme", "query": _QUESTION,
    "retrieved": [{"chunk_id": _CHUNK_ID, "doc_id": _DOC_ID, "score": 0.81, "rank": 1}],
    "prompt": [{"role": "system", "content": "Answer from the sources below and cite them."},
               {"role": "user", "content": _QUESTION}],
    "answer": _ANSWER,
    "citations": [{"n": 1, "chunk_id": _CHUNK_ID, "doc_id": _DOC_ID, "title": "Travel policy",
                   "source": "/srv/handbook/travel.pdf", "page": 2, "score": 0.81}],
    "model": "mistral-small-latest", "prompt_tokens": 1432, "completion_tokens": 58,
    "latency_ms": 1870, "ttft_ms": 410, "status": "ok", "error": None,
    "user_hash": _HASH, "app_release": "0.1.0", "prompt_template": "rag-answer",
    "prompt_template_version": "a1b2c3d4e5f6", "total_tokens": 1490, "finish_reason": "stop",
    "consent": True, "tool_definitions_hash": _HASH}
TRACE_DETAIL_EXAMPLE: dict[str, Any] = {
    **TRACE_EXAMPLE,
    "spans": [SPAN_EXAMPLE],
    "messages": [
        {"position": 0, "role": "user", "content": _QUESTION, "tool_call_id": None,
         "tool_calls": None, "is_output": False},
        {"position": 1, "role": "assistant", "content": "", "tool_call_id": None,
         "tool_calls": [{"id": "call_8f2a1c", "type": "function",
                         "function": {"name": "get_document",
                                      "arguments": TOOL_CALL_EXAMPLE["arguments"]}}],
         "is_output": False},
        {"position": 2, "role": "tool", "content": TOOL_CALL_EXAMPLE["result"],
         "tool_call_id": "call_8f2a1c", "tool_calls": None, "is_output": False},
        MESSAGE_EXAMPLE],
    "tool_calls": [TOOL_CALL_EXAMPLE],
    "chunks": [CHUNK_EXAMPLE],
    "feedback": [FEEDBACK_EXAMPLE]}


class TracePublic(BaseModel):
    """A trace as the API returns it."""

    model_config = ConfigDict(from_attributes=True,
                              json_schema_extra={"examples": [TRACE_EXAMPLE]})

    id: str
    created_at: datetime
    conversation_id: str | None
    tenant: str
    query: str
    retrieved: list[dict[str, Any]]
    prompt: list[dict[str, Any]]
    answer: str
    citations: list[dict[str, Any]]
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: int | None
    ttft_ms: int | None
    status: str
    error: str | None
    user_hash: str | None = None
    app_release: str | None = None
    prompt_template: str | None = None
    prompt_template_version: str | None = None
    total_tokens: int | None = None
    finish_reason: str | None = None
    consent: bool = False
    tool_definitions_hash: str | None = None

    @field_validator("created_at")
    @classmethod
    def _assume_utc(cls, value: datetime) -> datetime:
        return _utc(value) or value


class SpanPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True,
                              json_schema_extra={"examples": [SPAN_EXAMPLE]})

    id: str
    parent_id: str | None
    kind: str
    name: str
    started_at: datetime
    ended_at: datetime | None
    duration_ms: int | None
    status: str
    error: str | None
    attributes: dict[str, Any]

    @field_validator("started_at", "ended_at")
    @classmethod
    def _assume_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)


class MessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True,
                              json_schema_extra={"examples": [MESSAGE_EXAMPLE]})

    position: int
    role: str
    content: str
    tool_call_id: str | None
    tool_calls: list[dict[str, Any]] | None
    is_output: bool


class ToolCallPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True,
                              json_schema_extra={"examples": [TOOL_CALL_EXAMPLE]})

    position: int
    call_id: str
    name: str
    arguments: str
    result: str | None
    status: str
    latency_ms: int | None


class ChunkPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True,
                              json_schema_extra={"examples": [CHUNK_EXAMPLE]})

    rank: int
    chunk_id: str
    doc_id: str
    score: float
    rerank_score: float | None
    in_prompt: bool
    cited: bool
    text: str | None


class FeedbackCreate(BaseModel):
    """Feedback on one answer: any of thumbs (+1/-1, with a reason), rating
    (1..5), comment, correction (the answer as it should have been)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"thumbs": -1, "reason": "outdated",
         "comment": "The policy changed in 2026: the limit is now 5 hours.",
         "correction": "Book economy for flights under 5 hours; business class from 5 hours."}]})

    thumbs: Literal[-1, 1] | None = None
    rating: int | None = Field(default=None, ge=1, le=5)
    reason: str | None = Field(default=None, max_length=255)
    comment: str | None = Field(default=None, max_length=10_000)
    correction: str | None = Field(default=None, max_length=50_000)
    source: Literal["user", "annotator"] = "user"

    @model_validator(mode="after")
    def _something(self) -> FeedbackCreate:
        if (self.thumbs is None and self.rating is None and not self.comment
                and not (self.correction or "").strip()):
            raise ValueError("feedback needs thumbs, rating, comment or correction")
        return self


class ReviewUpdate(BaseModel):
    """An annotator's decision on a piece of feedback."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"review_status": "approved", "note": "Correction checked against the 2026 policy."}]})

    review_status: Literal["pending", "approved", "rejected"]
    note: str | None = Field(default=None, max_length=10_000)


class FeedbackPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True,
                              json_schema_extra={"examples": [FEEDBACK_EXAMPLE]})

    id: str
    trace_id: str
    created_at: datetime
    source: str
    thumbs: int | None
    rating: int | None
    reason: str | None
    comment: str | None
    correction: str | None
    review_status: str
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None

    @field_validator("created_at", "reviewed_at")
    @classmethod
    def _assume_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)


class TraceDetail(TracePublic):
    """A trace with its spans, messages, tool calls, chunks and feedback."""

    model_config = ConfigDict(json_schema_extra={"examples": [TRACE_DETAIL_EXAMPLE]})

    spans: list[SpanPublic] = []
    messages: list[MessagePublic] = []
    tool_calls: list[ToolCallPublic] = []
    chunks: list[ChunkPublic] = []
    feedback: list[FeedbackPublic] = []


class ExportPublic(BaseModel):
    """An export job as the API returns it; ``manifest`` once it is done."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "c0ffee00-1234-4abc-9def-00112233aabb", "tenant": "acme",
        "created_at": "2026-11-24T11:00:00Z", "finished_at": "2026-11-24T11:00:12Z",
        "status": "done", "format": EXPORT_REQUEST_EXAMPLE["format"],
        "request": {**EXPORT_REQUEST_EXAMPLE,
                    "filters": {**EXPORT_FILTERS_EXAMPLE, "tenant": "acme"}},
        "manifest": {"export_id": "c0ffee00-1234-4abc-9def-00112233aabb",
                     "format": EXPORT_REQUEST_EXAMPLE["format"], "seed": 42,
                     "counts": {"examples": 1240, "duplicates_exact": 31,
                                "duplicates_near": 12, "records": 1197},
                     "files": {"train.jsonl": {"records": 1077, "conversations": 1002},
                               "validation.jsonl": {"records": 120, "conversations": 111}}},
        "error": None}]})

    id: str
    tenant: str
    created_at: datetime
    finished_at: datetime | None
    status: str
    format: str
    request: dict[str, Any]
    manifest: dict[str, Any] | None
    error: str | None

    @field_validator("created_at", "finished_at")
    @classmethod
    def _assume_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)
