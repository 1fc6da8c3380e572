"""Sources (watched folders, per-tenant uploads) and their sync planner.

``sync_source`` compares the folder with the documents registered from it,
by content hash: unchanged files are skipped, new and changed files are
queued as items of a "sync" job, duplicates are recorded without chunks, and
documents whose file is gone are deleted with their chunks. The caller
commits, then enqueues ``SyncPlan.to_enqueue`` with the job id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ingest.jobs import (
    add_items,
    add_skipped_paths,
    cancel_items_of,
    create_job,
    finish_if_complete,
)
from ingest.models import Document, Job, Source, StagedChunks
from ingest.service import (
    Access,
    Known,
    Skipped,
    iter_files,
    promote_duplicates,
    same_access,
    stage_file,
)
from retrieval.store import Store
from sirocco.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from sirocco.types import EVERYONE

logger = logging.getLogger(__name__)

UPLOADS = "uploads"


@dataclass(slots=True)
class SyncPlan:
    """The outcome of planning a sync: the job and what to enqueue after commit."""

    job: Job
    to_enqueue: list[str] = field(default_factory=list)


def add_source(
    path: str | Path, *, session: Session, tenant: str = "default", name: str | None = None,
    access: Access | None = None,
) -> Source:
    """Register a folder as a source (flushed). Its name defaults to the folder's
    name; its documents get ``access`` (default: everyone in the tenant, no
    tags). Raises ``NotFoundError`` when the folder does not exist and
    ``InvalidInputError`` when the tenant already has a source of that name."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise NotFoundError(f"{path}: no such folder")
    name = name or root.name
    if name == UPLOADS or _by_name(session, tenant, name) is not None:
        raise InvalidInputError(f"a source named {name!r} exists already; pick another --name")
    access = access or Access()
    source = Source(tenant=tenant, name=name, kind="folder", path=str(root), acl=access.acl,
                    tags=access.tags)
    session.add(source)
    session.flush()
    logger.info("source added", extra={"source_id": source.id, "path": str(root)})
    return source


def allowed_folder(path: str | Path, *, roots: Sequence[Path], data_dir: Path) -> Path:
    """``path`` resolved (symlinks followed), if a client may make it a source:
    inside one of ``roots`` (``ingest.allowed_roots``) and apart from the
    server's ``data_dir``, which holds every tenant's uploads.

    Raises ``PermissionDeniedError`` otherwise, with the same message whether
    or not the folder exists, so the answer reveals nothing outside the roots;
    with no roots every folder is refused (the CLI on the server may still add
    them).
    """
    if not roots:
        raise PermissionDeniedError(
            "adding source folders through the API is off: list the folders it may use in "
            "ingest.allowed_roots (SIROCCO_INGEST__ALLOWED_ROOTS), or run `sirocco sources "
            "add` on the server")
    if not Path(path).is_absolute():
        raise InvalidInputError(f"{path}: give an absolute path", param="path")
    real = Path(os.path.realpath(path))
    data = Path(os.path.realpath(data_dir))

    def within(inner: Path, outer: Path) -> bool:
        return inner == outer or outer in inner.parents

    inside = any(within(real, Path(os.path.realpath(r))) for r in roots)
    if not inside or within(real, data) or within(data, real):
        raise PermissionDeniedError(
            f"{path} is not inside the folders sources may come from (ingest.allowed_roots)")
    return real


def display_path(path: str, source: Source | None) -> str:
    """How citations and tools show a document's file: relative to its source's
    folder under the source's name ("handbook/travel/policy.pdf"), the file
    name for uploads and files ingested without a source; never the absolute
    server path."""
    file = Path(path)
    if source is not None and source.kind == "folder" and source.path:
        try:
            return str(PurePosixPath(source.name, *file.relative_to(source.path).parts))
        except ValueError:
            pass
    return file.name


def uploads_source(*, session: Session, tenant: str, path: str | Path | None = None) -> Source:
    """The tenant's "uploads" source, created on first use."""
    source = _by_name(session, tenant, UPLOADS)
    if source is None:
        source = Source(tenant=tenant, name=UPLOADS, kind="uploads",
                        path=str(path) if path is not None else None)
        session.add(source)
        session.flush()
    return source


def get_source(ref: str, *, session: Session, tenant: str | None = None) -> Source:
    """The source with id ``ref``, else named ``ref`` (in ``tenant``, default any).
    Raises ``NotFoundError``, or ``InvalidInputError`` when a name is ambiguous
    across tenants."""
    source = session.get(Source, ref)
    if source is not None and tenant in (None, source.tenant):
        return source
    stmt = select(Source).where(Source.name == ref)
    if tenant is not None:
        stmt = stmt.where(Source.tenant == tenant)
    found = list(session.scalars(stmt))
    if not found:
        raise NotFoundError(f"source {ref!r} not found")
    if len(found) > 1:
        raise InvalidInputError(f"several tenants have a source {ref!r}; give --tenant or the id")
    return found[0]


def list_sources(*, session: Session, tenant: str | None = None) -> list[tuple[Source, int]]:
    """Every source (of ``tenant``, default all) with its document count, by name."""
    stmt = select(Source).order_by(Source.tenant, Source.name)
    if tenant is not None:
        stmt = stmt.where(Source.tenant == tenant)
    sources = list(session.scalars(stmt))
    counts = {s.id: 0 for s in sources}
    for sid in session.scalars(select(Document.source_id).where(Document.source_id.in_(counts))):
        if sid is not None:
            counts[sid] += 1
    return [(s, counts[s.id]) for s in sources]


def sync_source(source: Source, *, session: Session, store: Store) -> SyncPlan:
    """Plan and record a sync of a folder source as a new "sync" job (see the
    module docstring). Chunks of removed documents, and of documents that became
    duplicates, are deleted from ``store`` before the rows: a failed commit then
    only repeats the (idempotent) deletes on the next sync.
    Raises ``InvalidInputError`` for an uploads source, ``NotFoundError`` when
    the folder is gone (nothing is deleted then)."""
    if source.kind != "folder" or not source.path:
        raise InvalidInputError(f"source {source.name!r} is not a folder; only folders sync")
    job = create_job(session=session, tenant=source.tenant, kind="sync", source_id=source.id)
    seen: set[str] = set()
    queued: list[Document] = []
    duplicates: list[Document] = []
    skipped: list[Skipped] = []
    unchanged = 0
    files = list(iter_files([source.path], skipped=skipped))
    known = Known.load(files, session=session, tenant=source.tenant)
    for path in files:
        staged = stage_file(path, session=session, tenant=source.tenant, source_id=source.id,
                            access=Access(acl=source.acl, tags=source.tags), known=known)
        seen.add(staged.doc.id)
        queued.extend(staged.promoted)
        if staged.outcome == "unchanged":
            unchanged += 1
        elif staged.outcome == "duplicate":
            duplicates.append(staged.doc)
        else:
            queued.append(staged.doc)
    for doc in duplicates:
        if doc.chunk_count:
            store.delete_document(doc.id)
            doc.chunk_count = 0
    gone = [d for d in _documents_of(session, source.id) if d.id not in seen]
    queued.extend(_delete_documents(gone, session=session, store=store))
    add_items(job, _unique(queued), session=session)
    add_items(job, duplicates, session=session, state="skipped", error="duplicate content")
    add_skipped_paths(job, skipped, session=session)
    job.total += unchanged
    job.skipped += unchanged
    job.removed = len(gone)
    session.flush()
    finish_if_complete(session=session, job_id=job.id)
    logger.info("sync planned", extra={"source_id": source.id, "job_id": job.id,
                                       "queued": len(queued), "removed": len(gone)})
    return SyncPlan(job=job, to_enqueue=[d.id for d in _unique(queued)])


def set_source_access(source: Source, access: Access, *, session: Session,
                      store: Store) -> tuple[int, list[str]]:
    """Give a source, its documents and their indexed chunks ``access`` (flushed).

    The chunks are rewritten first, in the store: a narrowed source stops
    showing at the next search, not after a re-ingest; a document being
    embedded meanwhile takes the new access (``ingest.pipeline.store_claimed``
    reads it). Duplicates only pair documents of equal access, so pairs the
    change splits become originals of their own. Returns the number of
    documents changed and the ids to enqueue after the commit."""
    source.acl, source.tags = access.acl, access.tags
    docs = _documents_of(session, source.id)
    store.set_access([d.id for d in docs], acl=access.acl or [EVERYONE],
                     tags=access.tags or [])
    for doc in docs:
        doc.acl, doc.tags = access.acl, access.tags
    session.flush()
    queued = _split_duplicates(docs, session=session)
    logger.info("source access changed", extra={"source_id": source.id, "documents": len(docs),
                                                "requeued": len(queued)})
    return len(docs), [d.id for d in queued]


def _split_duplicates(docs: list[Document], *, session: Session) -> list[Document]:
    """Re-queue, as originals, duplicates whose access no longer matches their
    original's (either side may be among ``docs``)."""
    queued: list[Document] = []
    for doc in docs:
        original = session.get(Document, doc.duplicate_of) if doc.duplicate_of else None
        if original is not None and not same_access(original, doc):
            doc.duplicate_of, doc.status, doc.attempts, doc.error = None, "queued", 0, None
            queued.append(doc)
        for dup in session.scalars(select(Document).where(Document.duplicate_of == doc.id)):
            if not same_access(dup, doc):
                dup.duplicate_of, dup.status, dup.attempts, dup.error = None, "queued", 0, None
                queued.append(dup)
    session.flush()
    return _unique(queued)


def remove_source(source: Source, *, session: Session, store: Store) -> tuple[int, list[str]]:
    """Delete a source, its documents and their chunks (flushed). Returns the
    number of documents deleted and the ids of duplicates elsewhere that were
    promoted and must be enqueued after the commit."""
    docs = _documents_of(session, source.id)
    promoted = _delete_documents(docs, session=session, store=store)
    session.delete(source)
    session.flush()
    logger.info("source removed", extra={"source_id": source.id, "documents": len(docs)})
    return len(docs), [d.id for d in promoted]


def _delete_documents(docs: list[Document], *, session: Session, store: Store) -> list[Document]:
    """Delete ``docs`` and their chunks; returns promoted duplicates to ingest."""
    ids = {d.id for d in docs}
    promoted: list[Document] = []
    for doc in docs:
        store.delete_document(doc.id)
        promoted += [p for p in promote_duplicates(doc.id, session=session) if p.id not in ids]
    # Keep the items' history, but let no task of an active job run on them.
    cancel_items_of(ids, session=session, error="the document was deleted")
    session.execute(delete(StagedChunks).where(StagedChunks.document_id.in_(ids)))
    for doc in docs:
        session.delete(doc)
    session.flush()
    return [p for p in promoted if p.id not in ids]


def _documents_of(session: Session, source_id: str) -> list[Document]:
    return list(session.scalars(select(Document).where(Document.source_id == source_id)))


def _by_name(session: Session, tenant: str, name: str) -> Source | None:
    return session.scalar(select(Source).where(Source.tenant == tenant, Source.name == name))


def _unique(docs: list[Document]) -> list[Document]:
    return list({d.id: d for d in docs}.values())
