"""SQL tables of traces: one ``Trace`` per answered question, and its parts.

    traces ──< trace_spans            retrieval / rerank / llm / tool / guardrail,
       │                              attributes under OpenTelemetry GenAI names
       ├──< trace_messages            the chat as sent to the model, then its output
       ├──< trace_tool_calls          calls the model made (name, arguments, result)
       ├──< trace_retrieved_chunks    rank, scores, in_prompt, the text as seen
       ├──< feedback                  thumbs / rating / comment / correction, review
       └──> tool_definitions          the tools offered, stored once per sha256

``exports`` records fine-tuning export jobs (``traces.export``). Public
schemas live in ``traces.schemas``; schema changes go through Alembic
(``0006_trace_model``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from sirocco.db import Base, utcnow

#: Trace lifecycle: written as "running" when the question arrives, then
#: finished as "ok" or "error" (a crash in between leaves "running" behind).
TraceStatus = Literal["running", "ok", "error"]
SpanKind = Literal["retrieval", "rerank", "llm", "tool", "guardrail"]
SPAN_KINDS: tuple[str, ...] = ("retrieval", "rerank", "llm", "tool", "guardrail")
FeedbackSource = Literal["user", "annotator"]
ReviewStatus = Literal["pending", "approved", "rejected"]
REVIEW_STATUSES: tuple[str, ...] = ("pending", "approved", "rejected")


def _uuid() -> str:
    return str(uuid.uuid4())


class ToolDefinitionSet(Base):
    """The tool definitions (OpenAI ``tools`` list) offered to the model, stored
    once under the sha256 of their canonical JSON."""

    __tablename__ = "tool_definitions"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class Trace(Base):
    """What the assistant saw, sent and answered for one question.

    retrieved: ``[{chunk_id, doc_id, score, rank}]`` as returned by the store
    (the full record is in ``trace_retrieved_chunks``). prompt: the chat
    messages sent to the model (OpenAI dicts); empty when the model was not
    called. citations: the citation dicts of the final answer.
    """

    __tablename__ = "traces"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=_uuid)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    conversation_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    tenant: Mapped[str] = mapped_column(String(64), default="default", index=True)
    #: sha256 of (salt, tenant, user): feedback and exports never see the user name.
    user_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    app_release: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prompt_template: Mapped[str | None] = mapped_column(String(128), nullable=True)
    prompt_template_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    query: Mapped[str] = mapped_column(Text)
    retrieved: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    prompt: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    answer: Mapped[str] = mapped_column(Text, default="")
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    model: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    total_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ttft_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The user agreed that this interaction may be used as training data.
    consent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    tool_definitions_hash: Mapped[str | None] = mapped_column(
        ForeignKey("tool_definitions.hash"), nullable=True)

    spans: Mapped[list[TraceSpan]] = relationship(
        back_populates="trace", cascade="all, delete-orphan", order_by="TraceSpan.started_at")
    messages: Mapped[list[TraceMessage]] = relationship(
        cascade="all, delete-orphan", order_by="TraceMessage.position")
    tool_calls: Mapped[list[TraceToolCall]] = relationship(
        cascade="all, delete-orphan", order_by="TraceToolCall.position")
    chunks: Mapped[list[TraceRetrievedChunk]] = relationship(
        cascade="all, delete-orphan", order_by="TraceRetrievedChunk.rank")
    feedback: Mapped[list[Feedback]] = relationship(
        back_populates="trace", cascade="all, delete-orphan", order_by="Feedback.created_at")
    tool_definitions: Mapped[ToolDefinitionSet | None] = relationship()


class TraceSpan(Base):
    """One timed step of a trace. ``attributes`` use OpenTelemetry GenAI names
    where they exist (``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
    ``gen_ai.tool.name`` ...)."""

    __tablename__ = "trace_spans"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=_uuid)
    trace_id: Mapped[str] = mapped_column(
        ForeignKey("traces.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    trace: Mapped[Trace] = relationship(back_populates="spans")


class TraceMessage(Base):
    """One chat message of a trace, in order: the prompt (``is_output`` False),
    then what the model produced (``is_output`` True: text or tool calls)."""

    __tablename__ = "trace_messages"
    __table_args__ = (UniqueConstraint("trace_id", "position", name="uq_trace_messages_pos"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(
        ForeignKey("traces.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    tool_call_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: OpenAI form ``[{id, type, function: {name, arguments}}]`` on assistant turns.
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    is_output: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class TraceToolCall(Base):
    """A tool call: made by the model in this trace (``status`` "called" until a
    result is known) or answered earlier in the conversation."""

    __tablename__ = "trace_tool_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(
        ForeignKey("traces.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    call_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    arguments: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="called")
    latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)


class TraceRetrievedChunk(Base):
    """A chunk retrieval returned, with its rank and scores; ``in_prompt`` when
    the model saw it, ``cited`` when a model-written citation the support check
    did not reject points at it (``traces.citations``), ``text`` as it was then."""

    __tablename__ = "trace_retrieved_chunks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(
        ForeignKey("traces.id", ondelete="CASCADE"), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    chunk_id: Mapped[str] = mapped_column(String(64))
    doc_id: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    rerank_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    in_prompt: Mapped[bool] = mapped_column(Boolean, default=False)
    cited: Mapped[bool] = mapped_column(Boolean, default=False)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)


class Feedback(Base):
    """A judgement of one trace's answer, by its user or by an annotator.

    thumbs: +1 / -1; rating: 1..5; correction: the assistant message as it
    should have been (replaces the answer in exports). Annotator review:
    ``review_status`` pending → approved / rejected.
    """

    __tablename__ = "feedback"
    #: One piece of feedback per author, kind and trace: a second vote replaces
    #: the first (``traces.feedback.add_feedback``).
    __table_args__ = (UniqueConstraint("trace_id", "source", "author_hash",
                                       name="uq_feedback_author"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=_uuid)
    trace_id: Mapped[str] = mapped_column(
        ForeignKey("traces.id", ondelete="CASCADE"), index=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    source: Mapped[str] = mapped_column(String(16), default="user")
    author_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    thumbs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    review_status: Mapped[str] = mapped_column(String(16), default="pending")
    reviewed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    review_note: Mapped[str | None] = mapped_column(Text, nullable=True)

    trace: Mapped[Trace] = relationship(back_populates="feedback")


class ExportJob(Base):
    """A fine-tuning export: what was asked, how it went, where the files are."""

    __tablename__ = "exports"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=_uuid)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    format: Mapped[str] = mapped_column(String(32))
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


# Kept importable from here (older callers); defined with the other schemas.
from traces.schemas import TracePublic  # noqa: E402, F401
