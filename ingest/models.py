"""SQL tables of the ingestion side."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sirocco.db import Base, utcnow


class Document(Base):
    """One source file known to Sirocco and where its ingestion stands.

    status: queued -> running -> done | failed
    One row per (tenant, source_path): re-registering a changed file re-queues it.
    """

    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("tenant", "source_path", name="uq_documents_tenant_path"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    tenant: Mapped[str] = mapped_column(String(64), default="default", index=True)
    source_path: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text, default="")
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    mime_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    # Ingestion attempts since the last (re-)queue; caps redeliveries of a
    # document that kills its worker (acks_late + reject_on_worker_lost).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
