"""Registering files as documents: content hashes, duplicates, folder walks.

Ingesting a registered document is ``ingest.pipeline``; the Celery tasks
(``workers.tasks``) and the API only call into these two modules.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.models import Document
from ingest.parsers import SUPPORTED_EXTENSIONS
from sirocco.errors import NotFoundError
from sirocco.files import file_sha256
from sirocco.types import group_acl_entry, user_acl_entry

logger = logging.getLogger(__name__)

_HASH_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Access:
    """Who may see a document within its tenant, and its tags: given to the
    documents of a source or an upload. ``acl`` entries are "user:<id>",
    "group:<name>" or "*"; None means everyone."""

    acl: list[str] | None = None
    tags: list[str] | None = None

    @classmethod
    def of(cls, *, users: Iterable[str] = (), groups: Iterable[str] = (),
           tags: Iterable[str] = ()) -> Access:
        """Everyone when no user or group is named; else exactly those."""
        acl = [user_acl_entry(u) for u in users if u] + [group_acl_entry(g) for g in groups if g]
        return cls(acl=acl or None, tags=sorted({t for t in tags if t}) or None)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file a folder walk left out, and why (it becomes a per-file error)."""

    path: Path
    reason: str


@dataclass(slots=True)
class Staged:
    """What ``stage_file`` did with one file."""

    outcome: str
    doc: Document
    promoted: list[Document] = field(default_factory=list)


def register_files(
    paths: Iterable[str | Path],
    *,
    session: Session,
    tenant: str = "default",
    force: bool = False,
    source_id: str | None = None,
    access: Access | None = None,
) -> list[Document]:
    """Create or update one ``Document`` per file and return those that changed.
    ``access`` (when given) sets the documents' ACL and tags.

    Folders are walked recursively; hidden files and folders, and files without a
    supported extension, are skipped there (a file named explicitly is always
    taken). A file already registered with the same content hash is skipped
    unless its last ingestion failed or was cancelled, or ``force`` is set; a
    changed file is re-queued. A file whose content another document of the
    tenant already has is returned with status "duplicate" (see ``stage_file``):
    enqueue only the documents with status "queued". The rows are flushed, not
    committed: commit, then enqueue. Raises ``NotFoundError`` for a path that
    does not exist.
    """
    files = list(iter_files(paths))
    # Thousands of files: the rows they may match are read in a few queries up
    # front and the new rows inserted in one flush, not two queries each.
    known = Known.load(files, session=session, tenant=tenant)
    changed: list[Document] = []
    for path in files:
        staged = stage_file(
            path, session=session, tenant=tenant, force=force, source_id=source_id,
            access=access, known=known,
        )
        if staged.outcome != "unchanged":
            changed.append(staged.doc)
        changed.extend(staged.promoted)
    session.flush()
    return changed


#: Values per ``IN (...)`` list (SQLite's bound-parameter limit is far above this).
_IN_CHUNK = 500


@dataclass(slots=True)
class Known:
    """What one registration of many files needs from the database, read in a
    few queries: the tenant's documents at these paths, those with these
    contents, and each file's SHA-256. ``stage_file`` keeps it current with the
    documents it creates or changes."""

    by_path: dict[str, Document]
    by_hash: dict[str, list[Document]]
    digests: dict[Path, str]

    @classmethod
    def load(cls, files: list[Path], *, session: Session, tenant: str) -> Known:
        digests = {p: file_sha256(p) for p in files}
        by_path: dict[str, Document] = {}
        by_hash: dict[str, list[Document]] = {}
        for column, values in ((Document.source_path, [str(p) for p in files]),
                               (Document.content_hash, sorted(set(digests.values())))):
            for i in range(0, len(values), _IN_CHUNK):
                for doc in session.scalars(select(Document).where(
                        Document.tenant == tenant, column.in_(values[i:i + _IN_CHUNK]))):
                    by_path.setdefault(doc.source_path, doc)
                    if doc.content_hash is not None:
                        by_hash.setdefault(doc.content_hash, []).append(doc)
        for docs in by_hash.values():
            docs.sort(key=lambda d: (d.created_at, d.id))
        return cls(by_path, {h: list(dict.fromkeys(d)) for h, d in by_hash.items()}, digests)

    def original(self, digest: str, doc: Document) -> Document | None:
        """The first live document (not a duplicate) with this content and the
        same access as ``doc``, other than ``doc``."""
        return next((d for d in self.by_hash.get(digest, ())
                     if d is not doc and d.content_hash == digest and d.duplicate_of is None
                     and same_access(d, doc)), None)

    def add(self, doc: Document) -> None:
        self.by_path[doc.source_path] = doc
        if doc.content_hash is not None:
            docs = self.by_hash.setdefault(doc.content_hash, [])
            if doc not in docs:
                docs.append(doc)


def stage_file(
    path: Path,
    *,
    session: Session,
    tenant: str,
    force: bool = False,
    source_id: str | None = None,
    access: Access | None = None,
    known: Known | None = None,
) -> Staged:
    """Register one file; ``Staged.outcome`` is "unchanged" (nothing to do),
    "queued" (new or changed: to ingest) or "duplicate"; ``Staged.promoted``
    holds a former duplicate of this file's old content, now queued in its place.
    A file whose ``access`` changed is queued again, so its chunks carry the new
    ACL (search filters on the chunks' copy).

    Duplicates: one copy of each content per tenant and access is ingested. A
    new or changed file whose SHA-256 equals another live document's with the
    same ACL and tags gets status
    "duplicate" and ``duplicate_of`` = that document's id, and no chunks (any it
    had are for the caller to delete: ``Document.chunk_count`` is left as it
    was until then). When the original changes or goes away,
    ``promote_duplicates`` makes one of its duplicates the new original.
    """
    digest = known.digests.get(path) if known is not None else None
    digest = digest or file_sha256(path)
    source = str(path)
    if known is not None:
        doc = known.by_path.get(source)
    else:
        doc = session.scalar(
            select(Document).where(Document.tenant == tenant, Document.source_path == source)
        )
    if doc is None:
        # The id now, not at the flush: a later file of the same registration
        # may name this one as its original before anything is flushed.
        doc = Document(id=str(uuid.uuid4()), tenant=tenant, source_path=source,
                       title=path.stem, chunk_count=0)
        session.add(doc)
    elif (not force and doc.content_hash == digest and doc.status not in ("failed", "cancelled")
          and (access is None or (doc.acl, doc.tags) == (access.acl, access.tags))):
        logger.debug("unchanged, skipped", extra={"path": source, "doc_id": doc.id})
        if source_id is not None:
            doc.source_id = source_id
        return Staged("unchanged", doc)
    if source_id is not None:
        doc.source_id = source_id
    if access is not None:
        doc.acl, doc.tags = access.acl, access.tags
    promoted: list[Document] = []
    if doc.content_hash is not None and doc.content_hash != digest:
        promoted = promote_duplicates(doc.id, session=session)
    doc.content_hash = digest
    doc.error = None
    doc.attempts = 0
    # Only a copy with the same access counts: its chunks then show exactly to
    # those who may see this file, and a duplicate never confirms that a file
    # the uploader may not see exists.
    if known is not None:
        for d in promoted:
            known.add(d)
        original = known.original(digest, doc)
        known.add(doc)
    else:
        session.flush()
        original = next((d for d in session.scalars(
            select(Document)
            .where(Document.tenant == tenant, Document.content_hash == digest,
                   Document.id != doc.id, Document.duplicate_of.is_(None))
            .order_by(Document.created_at, Document.id)
        ) if same_access(d, doc)), None)
    if original is not None and not force:
        doc.status, doc.duplicate_of = "duplicate", original.id
        return Staged("duplicate", doc, promoted)
    doc.status, doc.duplicate_of = "queued", None
    return Staged("queued", doc, promoted)


def same_access(a: Document, b: Document) -> bool:
    """Whether two documents show to the same people with the same tags."""
    return (sorted(a.acl or []), sorted(a.tags or [])) == (sorted(b.acl or []),
                                                           sorted(b.tags or []))


def promote_duplicates(doc_id: str, *, session: Session) -> list[Document]:
    """Call when document ``doc_id`` changed or is being deleted: its duplicates
    no longer have an original. The first (by path) becomes one, queued for
    ingestion; the others point to it. Returns the promoted document, if any."""
    dups = list(session.scalars(
        select(Document).where(Document.duplicate_of == doc_id).order_by(Document.source_path)
    ))
    if not dups:
        return []
    first, rest = dups[0], dups[1:]
    first.duplicate_of, first.status, first.attempts, first.error = None, "queued", 0, None
    for d in rest:
        d.duplicate_of = first.id
    logger.info("duplicate promoted", extra={"doc_id": first.id, "was_duplicate_of": doc_id})
    return [first]


def iter_files(paths: Iterable[str | Path],
               skipped: list[Skipped] | None = None) -> Iterator[Path]:
    """Absolute file paths, each once, folders walked in sorted order. A file in
    a folder that is a symlink leading out of that folder is not yielded: it is
    appended to ``skipped`` (a folder must not publish what lies outside it)."""
    seen: set[Path] = set()
    for raw in paths:
        root = Path(raw).expanduser().resolve()
        if not root.exists():
            raise NotFoundError(f"{raw}: no such file or folder")
        if root.is_file():
            candidates: Iterable[Path] = [root]
        else:
            candidates = _walk(root)
        for path in candidates:
            if root.is_dir() and root not in path.resolve().parents:
                logger.warning("symlink out of the folder, skipped", extra={"path": str(path)})
                if skipped is not None:
                    skipped.append(Skipped(path, "skipped: a symlink that leads out of the "
                                                 "source folder"))
                continue
            if path not in seen:
                seen.add(path)
                yield path


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder, name)
            if name.startswith("."):
                continue
            if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                logger.debug("unsupported extension, skipped", extra={"path": str(path)})
                continue
            if path.is_file():
                yield path
