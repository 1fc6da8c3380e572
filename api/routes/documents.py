from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile
from starlette.types import Message, Receive

from api.auth import PrincipalDep
from api.deps import ServicesDep, SettingsDep
from api.schemas import ERROR_RESPONSES, AcceptedDocument, DocumentStatus, UploadAccepted
from api.services import Services
from ingest.intake import (
    Intake,
    IntakePorts,
    accept_uploads,
    tenant_uploads,
    too_large,
    upload_access,
    visible_document,
    visible_documents,
)
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
                        access=upload_access(principal, visibility, groups),
                        user=principal.user)
        done = await accept_uploads(files, intake=intake, ports=intake_ports(services))
    return UploadAccepted(job_id=done.job_id, documents=[
        AcceptedDocument(id=d.id, status=d.status, title=d.title, filename=d.filename)
        for d in done.documents])


def intake_ports(services: Services) -> IntakePorts:
    """Intake's database, ``register_files`` and broker, from the app's services."""
    def enqueue(doc_ids: Sequence[str], job_id: str | None) -> Any:
        return services.enqueue_documents(services.celery_app, doc_ids,
                                          job_id=job_id)  # type: ignore[call-arg]

    return IntakePorts(session_factory=services.session_factory,
                       register=services.register_files, enqueue=enqueue)


def capped_receive(receive: Receive, max_bytes: int, *, limit_bytes: int) -> Receive:
    """``receive`` (ASGI) that counts the request body and raises ``too_large(limit_bytes)``
    as soon as more than ``max_bytes`` have arrived, so an upload without
    Content-Length is cut at the limit instead of being spooled whole. Starlette's
    form parser closes (and so deletes) the temporary files of the parts read so
    far when it raises."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise too_large(limit_bytes)
        return message

    return counted



def _acl_entries(principal: PrincipalDep) -> set[str] | None:
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
        return [DocumentStatus.model_validate(d) for d in visible_documents(
            session=session, tenant=principal.tenant, acl_entries=_acl_entries(principal),
            status=status, limit=limit, offset=offset)]


@router.get("/api/documents/{doc_id}", response_model=DocumentStatus)
def get_document(doc_id: str, services: ServicesDep, principal: PrincipalDep) -> DocumentStatus:
    """Ingestion status of one document: status, error, chunk_count (404 for
    documents of other tenants or that the caller may not see)."""
    with session_scope(services.session_factory) as session:
        return DocumentStatus.model_validate(visible_document(
            session=session, doc_id=doc_id, tenant=principal.tenant,
            acl_entries=_acl_entries(principal)))
