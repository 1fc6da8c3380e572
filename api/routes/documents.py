from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile

from api.deps import ServicesDep, SettingsDep
from api.documents import accept_uploads, document_status, too_large
from api.schemas import DocumentStatus, UploadAccepted
from sirocco.db import session_scope

router = APIRouter(tags=["documents"])

TENANT = "default"  # until auth decides the tenant per caller
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
) -> UploadAccepted:
    """Store one or more files and queue them for ingestion (202: not searchable yet)."""
    limit = settings.api.max_upload_mb * 1024 * 1024
    # Checked before parsing, so an oversize body is not spooled to disk first.
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + MULTIPART_SLACK:
        raise too_large(limit)
    async with request.form(max_files=MAX_FILES, max_fields=MAX_FILES) as form:
        files = [f for key in ("files", "file") for f in form.getlist(key)
                 if isinstance(f, UploadFile)]
        accepted = await accept_uploads(
            files, services=services, uploads_root=settings.uploads_path,
            max_bytes=limit, tenant=TENANT,
        )
    return UploadAccepted(documents=accepted)


@router.get("/api/documents/{doc_id}", response_model=DocumentStatus)
def get_document(doc_id: str, services: ServicesDep) -> DocumentStatus:
    """Ingestion status of one document: status, error, chunk_count."""
    with session_scope(services.session_factory) as session:
        return document_status(session=session, doc_id=doc_id)
