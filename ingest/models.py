"""SQL tables of the ingestion side."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sirocco.db import Base, utcnow


class Source(Base):
    """Where documents come from: a watched folder, or the tenant's uploads.

    kind: "folder" (synced by ``ingest.sources.sync_source``) | "uploads".
    Names are unique per tenant, so the CLI can address a source by name.
    """

    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("tenant", "name", name="uq_sources_tenant_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    tenant: Mapped[str] = mapped_column(String(64), default="default", index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16), default="folder")
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Given to the documents synced from it (see ``Document.acl``, ``Document.tags``).
    acl: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Document(Base):
    """One source file known to Sirocco and where its ingestion stands.

    status: queued -> running (parsing) -> parsed (chunks staged in
    ``StagedChunks``) -> embedding (claimed by an embed task until
    ``lease_until``) -> done | failed; "cancelled" when its job was cancelled
    before it ran; "duplicate" when another document of the tenant has the same
    content hash: then ``duplicate_of`` names that document, and this one has no
    chunks of its own (search finds the original).
    One row per (tenant, source_path): re-registering a changed file re-queues it.
    """

    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("tenant", "source_path", name="uq_documents_tenant_path"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    tenant: Mapped[str] = mapped_column(String(64), default="default", index=True)
    source_path: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text, default="")
    source_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("sources.id"), nullable=True, index=True
    )
    # No foreign key: the original may be removed first; sync then promotes a duplicate.
    duplicate_of: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    mime_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    # Who may see it within the tenant: "*" (everyone), "user:<id>", "group:<name>";
    # None means everyone. Copied into every chunk's payload: search filters on it.
    acl: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # Ingestion attempts since the last (re-)queue; caps redeliveries of a
    # document that kills its worker (acks_late + reject_on_worker_lost).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # While "embedding": the claim is the embed task's until then; after it, the
    # claimer is presumed dead and any embed task may take the document over.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class StagedChunks(Base):
    """A parsed document's chunks, waiting for the embed stage (JSON list of
    ``Chunk`` fields), with the job item to finish once they are stored.

    Written by the parse task, read and deleted by the embed task that stores
    the document: parsing and embedding run on separate queues, and a task's
    arguments stay small (ids), so the chunks travel through SQL.
    """

    __tablename__ = "staged_chunks"

    document_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    chunks: Mapped[str] = mapped_column(Text)
    # Facts of the parse the embed stage writes onto the document once stored.
    title: Mapped[str] = mapped_column(Text, default="")
    mime_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """One sync, ``sirocco ingest`` run or upload, with its per-state counts.

    state: queued -> running -> done | failed | cancelled. A job finishes when
    done + failed + skipped + cancelled == total; it ends "failed" only when
    every ingested item failed (done == 0 and failed > 0), else "done" (check
    ``failed`` for partial failures). Cancelling sets "cancelled" at once; items
    already running still finish and are counted. ``skipped`` counts files that
    needed no work (unchanged, duplicates); ``removed`` the documents a sync
    deleted because their file was gone. Counts only change through atomic SQL
    updates (``ingest.jobs``), as several workers finish items concurrently.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    tenant: Mapped[str] = mapped_column(String(64), default="default", index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # No foreign key: a job outlives the source it synced (history).
    source_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    # The user whose upload made the job (None for syncs and CLI runs): they may
    # follow it (``GET /api/jobs/{id}``) without being an admin.
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    cancelled: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JobItem(Base):
    """One document's part in a job: queued -> running -> done | failed, or
    cancelled (before it ran) / skipped (a duplicate). ``path`` is kept so the
    item still names its file after the document row is deleted."""

    __tablename__ = "job_items"
    __table_args__ = (UniqueConstraint("job_id", "document_id", name="uq_job_items_job_doc"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id"), index=True)
    document_id: Mapped[str] = mapped_column(String(36), index=True)
    path: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
