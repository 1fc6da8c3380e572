"""Document intake: save uploads safely, register them, queue their ingestion.

Order matters: files are written, the documents are registered and committed,
and only then queued, so a worker never looks for a row that is not there yet.
If registering fails the saved files are removed again. An upload is visible
to its uploader unless they choose their groups (``upload_access``), lands in
the tenant's own folder (``tenant_uploads``), and becomes an "upload" job its
uploader may follow. The API's upload route calls ``accept_uploads``; the
ASGI side (counting a body without Content-Length) stays in the API.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ingest.jobs import add_items, create_job, finish_if_complete
from ingest.models import Document
from ingest.parsers import detect_format
from ingest.service import Access
from ingest.sources import uploads_source
from sirocco.db import session_scope
from sirocco.errors import (
    DocumentTooLargeError,
    InvalidInputError,
    NotFoundError,
    ParseError,
    PermissionDeniedError,
    UnavailableError,
)
from sirocco.principal import Principal
from sirocco.types import EVERYONE

logger = logging.getLogger(__name__)

MAX_NAME_BYTES = 255
_COPY_CHUNK = 1024 * 1024
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


class Upload(Protocol):
    """What intake needs of an uploaded file (Starlette's ``UploadFile`` fits)."""

    filename: str | None
    file: BinaryIO


Visibility = Literal["private", "groups", "tenant"]
VISIBILITIES: tuple[str, ...] = ("private", "groups", "tenant")


@dataclass(frozen=True, slots=True)
class Intake:
    """For whom and where an upload is stored: the tenant, its own uploads
    folder (``tenant_uploads``), the size limits, who may see the files and
    who uploaded them (they may follow the job)."""

    tenant: str
    root: Path
    max_bytes: int
    max_file_bytes: int
    access: Access | None = None
    user: str | None = None

class RegisterFiles(Protocol):
    """``ingest.service.register_files``: one ``Document`` per path."""

    def __call__(self, paths: Sequence[Path], *, session: Session, tenant: str = "default",
                 access: Access | None = None) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class IntakePorts:
    """What intake writes through: the database, ``register_files``, and
    ``enqueue(doc_ids, job_id)`` (the broker)."""

    session_factory: sessionmaker[Session]
    register: RegisterFiles
    enqueue: Callable[[Sequence[str], str | None], Any]


@dataclass(frozen=True, slots=True)
class Accepted:
    """One uploaded file as registered: its document id and status ("queued",
    or "duplicate" of a document with the same content and visibility)."""

    id: str
    status: str
    title: str
    filename: str


@dataclass(frozen=True, slots=True)
class Intaken:
    """An upload's documents and the job following them (None: nothing queued)."""

    documents: list[Accepted]
    job_id: str | None



def tenant_uploads(uploads_path: Path, tenant: str) -> Path:
    """The tenant's own folder under ``uploads_path``: a readable, path-safe
    name plus a hash of the tenant (two names never share a folder)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", tenant).strip(".")[:48] or "_"
    return uploads_path / f"{safe}-{hashlib.sha256(tenant.encode()).hexdigest()[:8]}"


def upload_access(principal: Principal, visibility: str, groups: Sequence[str]) -> Access:
    """Who may see an upload: "private" (the default: the uploader), "groups"
    (the uploader and ``groups``, default all of theirs; only groups they are
    in, unless admin) or "tenant" (everyone of the tenant; admins only)."""
    if visibility not in VISIBILITIES:
        raise InvalidInputError(f"visibility must be one of {', '.join(VISIBILITIES)}, "
                                f"got {visibility!r}", param="visibility")
    if principal.user is None:  # auth off (dev): the anonymous admin
        return Access()
    if visibility == "tenant":
        if not principal.is_admin:
            raise PermissionDeniedError("only an admin may share an upload with the whole "
                                        "tenant; choose private or groups")
        return Access()
    if visibility == "private":
        return Access.of(users=[principal.user])
    chosen = [g for g in groups if g] or list(principal.groups)
    if not chosen:
        raise InvalidInputError("you belong to no group: upload privately, or name groups",
                                param="groups")
    foreign = sorted(set(chosen) - set(principal.groups))
    if foreign and not principal.is_admin:
        raise PermissionDeniedError(f"you are not in group(s) {', '.join(foreign)}")
    return Access.of(users=[principal.user], groups=chosen)


def sanitize_filename(name: str) -> str:
    """A file name safe to join to a directory: the last path component only
    (``/`` and ``\\`` both count as separators), no control characters, no
    leading dots, at most 255 bytes with the extension kept.

    Raises ``InvalidInputError`` when nothing usable is left.
    """
    name = unicodedata.normalize("NFC", name)
    base = re.split(r"[/\\]", name)[-1]
    base = _UNSAFE.sub("", base).strip().lstrip(".").strip()
    if not base:
        raise InvalidInputError(f"invalid file name {name!r}: it must name a file")
    if len(base.encode()) > MAX_NAME_BYTES:
        stem, dot, ext = base.rpartition(".")
        ext = f".{ext}" if dot and len(ext) <= 16 else ""
        stem = stem if ext else base
        room = MAX_NAME_BYTES - len(ext.encode())
        base = stem.encode()[:room].decode(errors="ignore") + ext
    return base


def too_large(limit_bytes: int) -> DocumentTooLargeError:
    """The error for a request body over ``limit_bytes``."""
    mb = limit_bytes / (1024 * 1024)
    return DocumentTooLargeError(f"upload too large: the limit is {mb:g} MB per request")


async def accept_uploads(files: Sequence[Upload], *, intake: Intake,
                         ports: IntakePorts) -> Intaken:
    """Save ``files`` under ``intake.root/<uuid>/<name>``, register them with
    ``intake.access`` as documents of the tenant's "uploads" source, commit,
    then queue the new ones as the items of an "upload" job (created by
    ``intake.user``, who may follow it). ``intake.max_bytes`` bounds the total
    size of all files, ``intake.max_file_bytes`` each one.

    Raises ``DocumentTooLargeError`` (nothing kept), ``UnsupportedFormatError``
    for a file type no parser reads (nothing kept), ``InvalidInputError`` for a
    bad name, ``UnavailableError`` when the queue cannot be reached (the
    documents stay registered with status "queued").
    """
    if not files:
        raise InvalidInputError("no files in the upload; send them in the multipart field 'files'")
    names = [sanitize_filename(f.filename or "") for f in files]
    max_bytes = intake.max_bytes
    for upload, name in zip(files, names, strict=True):
        await asyncio.to_thread(_check_file, upload.file, name, intake.max_file_bytes,
                                max_bytes)
    dirs: list[Path] = []
    try:
        paths: list[Path] = []
        remaining = max_bytes
        for upload, name in zip(files, names, strict=True):
            folder = intake.root / uuid.uuid4().hex
            dirs.append(folder)
            dest = folder / name
            if dest.resolve().parent != folder.resolve():  # defence in depth
                raise InvalidInputError(f"invalid file name {upload.filename!r}")
            written = await asyncio.to_thread(_save, upload.file, dest, remaining)
            if written is None:
                raise too_large(max_bytes)
            remaining -= written
            paths.append(dest)
        accepted = await asyncio.to_thread(_register, ports, paths, names, intake)
    except BaseException:
        for folder in dirs:
            shutil.rmtree(folder, ignore_errors=True)
        raise

    to_queue = [d.id for d in accepted if d.status == "queued"]
    job_id = None
    if to_queue:
        job_id = await asyncio.to_thread(_upload_job, ports, to_queue, intake)
        try:
            await asyncio.to_thread(ports.enqueue, to_queue, job_id)
        except Exception as exc:
            logger.exception("enqueue failed", extra={"doc_ids": to_queue})
            raise UnavailableError(
                "the documents were saved but the ingestion queue is unavailable; "
                "try again later"
            ) from exc
    return Intaken(documents=accepted, job_id=job_id)


def _visible(doc: Document, tenant: str | None, acl_entries: set[str] | None) -> bool:
    if tenant is not None and doc.tenant != tenant:
        return False
    return acl_entries is None or bool(acl_entries & set(doc.acl or [EVERYONE]))


def visible_document(*, session: Session, doc_id: str, tenant: str | None = None,
                     acl_entries: set[str] | None = None) -> Document:
    """One document; ``NotFoundError`` if unknown, or not of ``tenant`` / not
    visible to ``acl_entries`` when given (None: every document, for admins)."""
    doc = session.get(Document, doc_id)
    if doc is None or not _visible(doc, tenant, acl_entries):
        raise NotFoundError(f"document {doc_id!r} not found")
    return doc


def visible_documents(*, session: Session, tenant: str, acl_entries: set[str] | None = None,
                      status: str | None = None, limit: int = 100,
                      offset: int = 0) -> list[Document]:
    """The tenant's documents, newest first; only those whose ACL names one of
    ``acl_entries`` when given (None: all of them, for admins)."""
    query = select(Document).where(Document.tenant == tenant).order_by(
        Document.created_at.desc(), Document.id)
    if status is not None:
        query = query.where(Document.status == status)
    docs = [d for d in session.scalars(query) if _visible(d, tenant, acl_entries)]
    return docs[offset:offset + limit]


def _check_file(src: BinaryIO, name: str, max_file_bytes: int, max_bytes: int) -> None:
    """Refuse, before anything is saved, a file over the per-file limit or of a type
    no parser reads. Damage (a corrupt PDF ...) is left to ingestion to report."""
    src.seek(0, 2)
    size = src.tell()
    src.seek(0)
    if size > max_file_bytes:
        raise DocumentTooLargeError(
            f"{name}: file too large ({size / _COPY_CHUNK:.1f} MB); the limit is "
            f"{max_file_bytes / _COPY_CHUNK:g} MB per file")
    if size > max_bytes:
        return  # refused as a whole-request overflow while saving
    try:
        detect_format(src.read(), name=name)
    except ParseError:
        pass
    finally:
        src.seek(0)


def _save(src: BinaryIO, dest: Path, limit: int) -> int | None:
    """Copy ``src`` to a new file ``dest``; None (and no file) if over ``limit`` bytes."""
    dest.parent.mkdir(parents=True, exist_ok=False)
    src.seek(0)
    written = 0
    with dest.open("xb") as out:
        while chunk := src.read(_COPY_CHUNK):
            written += len(chunk)
            if written > limit:
                break
            out.write(chunk)
    if written > limit:
        dest.unlink(missing_ok=True)
        return None
    return written


def _register(ports: IntakePorts, paths: list[Path], names: list[str],
              intake: Intake) -> list[Accepted]:
    by_path = {str(p): n for p, n in zip(paths, names, strict=True)}
    with session_scope(ports.session_factory) as session:
        docs = ports.register(paths, session=session, tenant=intake.tenant,
                              access=intake.access)
        source = uploads_source(session=session, tenant=intake.tenant, path=intake.root)
        for doc in docs:
            doc.source_id = source.id
        session.flush()  # column defaults (id, status) are set on flush
        return [Accepted(id=d.id, status=d.status, title=d.title or "",
                         filename=by_path.get(str(d.source_path),
                                              Path(str(d.source_path)).name))
                for d in docs]


def _upload_job(ports: IntakePorts, doc_ids: list[str], intake: Intake) -> str:
    """The "upload" job whose items are the queued documents (committed before
    they are enqueued, so a worker finds it)."""
    with session_scope(ports.session_factory) as session:
        docs = [d for i in doc_ids if (d := session.get(Document, i)) is not None]
        job = create_job(session=session, tenant=intake.tenant, kind="upload",
                         created_by=intake.user)
        add_items(job, docs, session=session)
        finish_if_complete(session=session, job_id=job.id)
        job_id = job.id
    logger.info("upload job", extra={"job_id": job_id, "documents": len(docs)})
    return job_id
