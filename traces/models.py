"""SQL table and public schema of traces: one row per answered question."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sirocco.db import Base, utcnow

#: Trace lifecycle: written as "running" when the question arrives, then
#: finished as "ok" or "error" (a crash in between leaves "running" behind).
TraceStatus = Literal["running", "ok", "error"]


class Trace(Base):
    """What the assistant saw, sent and answered for one question.

    retrieved: ``[{chunk_id, doc_id, score, rank}]`` as returned by the store.
    prompt: the chat messages sent to the model (OpenAI dicts); empty when the
    model was not called. citations: the citation dicts of the final answer.
    """

    __tablename__ = "traces"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    conversation_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    tenant: Mapped[str] = mapped_column(String(64), default="default", index=True)
    query: Mapped[str] = mapped_column(Text)
    retrieved: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    prompt: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    answer: Mapped[str] = mapped_column(Text, default="")
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ttft_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class TracePublic(BaseModel):
    """A trace as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

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

    @field_validator("created_at")
    @classmethod
    def _assume_utc(cls, value: datetime) -> datetime:
        # SQLite drops the offset of timezone-aware columns; we only ever store UTC.
        return value if value.tzinfo else value.replace(tzinfo=UTC)
