"""Ingestion jobs: progress, per-file errors, cancel and retry.

Admin keys manage the tenant's jobs. The user whose upload made a job may
follow that one job (``GET /api/jobs/{id}``), with file names instead of
server paths; for anyone else of the tenant it does not exist (404).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.auth import AdminDep, PrincipalDep
from api.deps import ServicesDep
from api.schemas import ERROR_RESPONSES, JobItemPublic, JobPublic
from api.services import Services
from ingest.jobs import JobReport, cancel_job, get_report, list_jobs, retry_failed
from sirocco.db import session_scope
from sirocco.errors import NotFoundError
from sirocco.principal import Principal

router = APIRouter(tags=["jobs"], responses=ERROR_RESPONSES)


def job_public(report: JobReport) -> JobPublic:
    """The wire form of a job report."""
    items = [
        JobItemPublic(document_id=i.document_id, path=i.path, filename=Path(i.path).name,
                      state=i.state, error=i.error, attempts=i.attempts)
        for i in report.items
    ]
    return JobPublic.model_validate(
        {**{c: getattr(report.job, c) for c in JobPublic.model_fields if c not in
            ("progress", "items")}, "progress": report.progress, "items": items}
    )


#: ``items=`` of ``GET /api/jobs/{id}`` -> the item states it lists (None: all).
ITEM_VIEWS: dict[str, tuple[str, ...] | None] = {"all": None, "failed": ("failed",), "none": ()}
ItemsQuery = Annotated[Literal["all", "failed", "none"], Query(description=(
    "Which items to list: all (default), only the failed ones, or none (the counts and "
    "progress only: one row, however many files the job has)."))]


def load_job(services: Services, job_id: str, *, tenant: str,
             items: str = "all") -> JobPublic:
    """The job as it stands now, its items as ``items`` (``ITEM_VIEWS``) says;
    ``NotFoundError`` if unknown or of another tenant."""
    states = ITEM_VIEWS[items]
    with session_scope(services.session_factory) as session:
        job = job_public(get_report(session=session, job_id=job_id, states=states))
    if job.tenant != tenant:
        raise NotFoundError(f"job {job_id!r} not found")
    return job


def job_for(services: Services, job_id: str, principal: Principal,
            items: str = "all") -> JobPublic:
    """The job for an admin of its tenant, or for the user whose upload made it
    (items named by file, not server path); ``NotFoundError`` for anyone else."""
    job = load_job(services, job_id, tenant=principal.tenant, items=items)
    if principal.is_admin:
        return job
    if principal.user is None or job.created_by != principal.user:
        raise NotFoundError(f"job {job_id!r} not found")
    return job.model_copy(update={"items": [i.model_copy(update={"path": i.filename})
                                            for i in job.items]})


@router.get("/api/jobs", response_model=list[JobPublic])
def get_jobs(
    services: ServicesDep,
    admin: AdminDep,
    state: Annotated[str | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[JobPublic]:
    """The tenant's jobs, newest first, with counts and progress (no items:
    ``GET /api/jobs/{id}`` has them)."""
    with session_scope(services.session_factory) as session:
        return [job_public(r) for r in list_jobs(session=session, tenant=admin.tenant, state=state,
                                                   limit=limit)]


@router.get("/api/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: str, services: ServicesDep, principal: PrincipalDep,
            items: ItemsQuery = "all") -> JobPublic:
    """State, counts, progress and items (file, state, error) of one job: for an
    admin key, or for the user who uploaded its files (404 for anyone else).
    Pollers of a large job ask for ``items=failed`` or ``items=none``."""
    return job_for(services, job_id, principal, items)


@router.post("/api/jobs/{job_id}/cancel", response_model=JobPublic)
def cancel(job_id: str, services: ServicesDep, admin: AdminDep) -> JobPublic:
    """Cancel the queued items; running ones finish. A finished job is unchanged."""
    load_job(services, job_id, tenant=admin.tenant)
    with session_scope(services.session_factory) as session:
        cancel_job(session=session, job_id=job_id)
    return load_job(services, job_id, tenant=admin.tenant)


@router.post("/api/jobs/{job_id}/retry", status_code=202, response_model=JobPublic)
async def retry(job_id: str, services: ServicesDep, admin: AdminDep) -> JobPublic:
    """Queue the failed items again (enqueued after the commit)."""
    load_job(services, job_id, tenant=admin.tenant)
    with session_scope(services.session_factory) as session:
        doc_ids = retry_failed(session=session, job_id=job_id)
    if doc_ids:
        await asyncio.to_thread(services.enqueue_documents, services.celery_app, doc_ids,
                                job_id=job_id)  # type: ignore[call-arg]
    return load_job(services, job_id, tenant=admin.tenant)
