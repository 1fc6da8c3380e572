from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from api.auth import PrincipalDep
from api.deps import ServicesDep, SettingsDep
from api.documents import (
    Intake,
    accept_uploads,
    capped_receive,
    document_status,
    list_documents,
    tenant_uploads,
    too_large,
    upload_access,
)
from api.schemas import ERROR_RESPONSES, DocumentStatus, UploadAccepted
from api.services import Services
from ingest.jobs import add_items, create_job, finish_if_complete
from ingest.models import Document
from ingest.sources import uploads_source
from sirocco.db import session_scope

router = APIRouter(tags=["documents"], responses=ERROR_RESPONSES)
logger = logging.getLogger(__name__)

MAX_FILES = 100
#: Multipart framing around the files; a body bigger than limit + this is refused unread.
MULTIPART_SLACK = 64 * 1024

_UPLOAD_BODY = {
    "requestBody": {
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "properties": {"files": {"type": "array",
                                     "items": {"type": "string", "format": "binary"}}},
            "required": ["files"],
        }}},
        "required": True,
    }
}


@router.post("/api/documents", status_code=202, response_model=UploadAccepted,
             openapi_extra=_UPLOAD_BODY)
async def upload_documents(
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> UploadAccepted:
    """Store one or more files in the caller's tenant and queue them for
    ingestion (202: not searchable yet). Form fields besides ``files``:
    ``visibility`` "private" (default: only the uploader sees them), "groups"
    (the uploader and ``groups``, repeatable, default all of the uploader's) or
    "tenant" (admins only). A file whose content is already indexed with the
    same visibility is recorded as a duplicate of it; nothing the uploader
    cannot see takes part in that check."""
    limit = settings.api.max_upload_mb * 1024 * 1024
    # Checked before parsing, so an oversize body is not spooled to disk first.
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + MULTIPART_SLACK:
        raise too_large(limit)
    # A chunked body has no Content-Length (and a declared one may be wrong):
    # the bytes are counted as they arrive and the upload cut at the limit.
    request = Request(request.scope, capped_receive(request.receive, limit + MULTIPART_SLACK,
                                                    limit_bytes=limit))
    async with request.form(max_files=MAX_FILES, max_fields=MAX_FILES + 4) as form:
        files = [f for key in ("files", "file") for f in form.getlist(key)
                 if isinstance(f, UploadFile)]
        visibility = str(form.get("visibility") or "private")
        groups = [str(g) for g in form.getlist("groups") if isinstance(g, str)]
        intake = Intake(tenant=principal.tenant,
                        root=tenant_uploads(settings.uploads_path, principal.tenant),
                        max_bytes=limit,
                        max_file_bytes=int(settings.ingest.max_file_mb * 1024 * 1024),
                        access=upload_access(principal, visibility, groups))
        job = UploadJob(services, principal.tenant, intake.root, principal.user)
        accepted = await accept_uploads(files, services=job.services(), intake=intake)
    return UploadAccepted(documents=accepted, job_id=job.job_id)


def _principals(principal: PrincipalDep) -> set[str] | None:
    """ACL entries limiting what the caller sees; None for admins (whole tenant)."""
    return None if principal.is_admin else set(principal.acl_entries())


@router.get("/api/documents", response_model=list[DocumentStatus])
def get_documents(
    services: ServicesDep,
    principal: PrincipalDep,
    status: Annotated[str | None, Query(description="Only documents in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[DocumentStatus]:
    """The caller's tenant's documents, newest first: all of them for an admin
    key, otherwise those the caller may see (document ACL)."""
    with session_scope(services.session_factory) as session:
        return list_documents(session=session, tenant=principal.tenant,
                              principals=_principals(principal), status=status, limit=limit,
                              offset=offset)


@router.get("/api/documents/{doc_id}", response_model=DocumentStatus)
def get_document(doc_id: str, services: ServicesDep, principal: PrincipalDep) -> DocumentStatus:
    """Ingestion status of one document: status, error, chunk_count (404 for
    documents of other tenants or that the caller may not see)."""
    with session_scope(services.session_factory) as session:
        return document_status(session=session, doc_id=doc_id, tenant=principal.tenant,
                               principals=_principals(principal))


class UploadJob:
    """Makes an upload a job of the tenant's "uploads" source, around
    ``accept_uploads``: registered documents get the source, and the queued ones
    become the items of an "upload" job created just before they are enqueued."""

    def __init__(self, services: Services, tenant: str, uploads_root: Path,
                 user: str | None = None) -> None:
        self._base, self._tenant, self._root = services, tenant, uploads_root
        self._user = user  # the job's creator: they may follow it
        self.job_id: str | None = None

    def services(self) -> Services:
        """A copy of the services whose register/enqueue do the above."""
        return replace(self._base, register_files=self._register,
                       enqueue_documents=self._enqueue)

    def _register(self, paths: Any, *, session: Session, tenant: str = "default",
                  access: Any = None) -> list[Any]:
        docs = self._base.register_files(paths, session=session, tenant=tenant, access=access)
        source = uploads_source(session=session, tenant=tenant, path=self._root)
        for doc in docs:
            doc.source_id = source.id
        return docs

    def _enqueue(self, celery_app: Any, doc_ids: Any) -> Any:
        with session_scope(self._base.session_factory) as session:
            docs = [d for i in doc_ids if (d := session.get(Document, i)) is not None]
            job = create_job(session=session, tenant=self._tenant, kind="upload",
                             created_by=self._user)
            add_items(job, docs, session=session)
            finish_if_complete(session=session, job_id=job.id)
            self.job_id = job.id
        logger.info("upload job", extra={"job_id": self.job_id, "documents": len(docs)})
        return self._base.enqueue_documents(celery_app, doc_ids,
                                            job_id=self.job_id)  # type: ignore[call-arg]
