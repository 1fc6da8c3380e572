"""Fine-tuning exports of the caller's tenant's traces, run as Celery jobs.

``POST /api/exports`` stores a queued job and enqueues ``sirocco.traces.export``
(202); ``GET /api/exports/{id}`` reports its status and manifest;
``GET /api/exports/{id}/download`` sends a zip of the files, or one of them
with ``?file=train.jsonl|validation.jsonl|manifest.json``. Exports need an
admin key or membership of a reviewer group (``auth.reviewer_groups``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from api.auth import PrincipalDep
from api.deps import ServicesDep, SettingsDep
from api.routes.traces import require_reviewer
from sirocco.db import session_scope
from traces.export.jobs import create_export, export_file, get_export, list_exports
from traces.export.request import ExportRequest
from traces.schemas import ExportPublic

router = APIRouter(tags=["exports"])


@router.post("/api/exports", status_code=202, response_model=ExportPublic)
async def post_export(body: ExportRequest, services: ServicesDep,
                      principal: PrincipalDep,
                settings: SettingsDep) -> ExportPublic:
    """Queue an export of the caller's tenant's traces (format, filters, options)."""
    require_reviewer(principal, settings)
    from workers.export_tasks import enqueue_export

    with session_scope(services.session_factory) as session:
        job = ExportPublic.model_validate(
            create_export(session=session, tenant=principal.tenant, request=body))
    # After the commit, so the worker finds the row.
    await asyncio.to_thread(enqueue_export, services.celery_app, job.id)
    return job


@router.get("/api/exports", response_model=list[ExportPublic])
def get_exports(services: ServicesDep, principal: PrincipalDep, settings: SettingsDep,
                limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[ExportPublic]:
    """The tenant's exports, newest first."""
    require_reviewer(principal, settings)
    with session_scope(services.session_factory) as session:
        return [ExportPublic.model_validate(j)
                for j in list_exports(session=session, tenant=principal.tenant, limit=limit)]


@router.get("/api/exports/{export_id}", response_model=ExportPublic)
def read_export(export_id: str, services: ServicesDep, principal: PrincipalDep,
                settings: SettingsDep) -> ExportPublic:
    """Status of one export; its manifest (counts, files, sha256) once done."""
    require_reviewer(principal, settings)
    with session_scope(services.session_factory) as session:
        return ExportPublic.model_validate(
            get_export(session=session, export_id=export_id, tenant=principal.tenant))


@router.get("/api/exports/{export_id}/download", response_class=FileResponse)
def download_export(
    export_id: str, services: ServicesDep, principal: PrincipalDep, settings: SettingsDep,
    file: Annotated[str | None, Query(description="One file; default: a zip of all.")] = None,
) -> FileResponse:
    """The files of a finished export (400 while it is not done)."""
    require_reviewer(principal, settings)
    with session_scope(services.session_factory) as session:
        job = get_export(session=session, export_id=export_id, tenant=principal.tenant)
        path = export_file(job, file)
    media = "application/zip" if path.suffix == ".zip" else (
        "application/json" if path.suffix == ".json" else "application/x-ndjson")
    return FileResponse(path, media_type=media, filename=f"{export_id}-{path.name}")
