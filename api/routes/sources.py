"""Sources: watched folders; a sync creates a job (``/api/jobs/{id}``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from api.auth import AdminDep
from api.deps import ServicesDep
from api.routes.jobs import load_job
from api.schemas import ERROR_RESPONSES, JobPublic, SourceCreate, SourcePublic
from api.services import Services
from ingest.service import Access
from ingest.sources import add_source, get_source, list_sources, remove_source, sync_source
from retrieval.store import Store
from sirocco.db import session_scope
from sirocco.errors import UnavailableError

router = APIRouter(tags=["sources"], responses=ERROR_RESPONSES)


def _store(services: Services) -> Store:
    if services.store is None:
        raise UnavailableError("the vector store is not available")
    return services.store


@router.post("/api/sources", status_code=201, response_model=SourcePublic)
def create_source(body: SourceCreate, services: ServicesDep, admin: AdminDep) -> SourcePublic:
    """Register a folder on the server as a source (sync it to ingest). Admin key."""
    with session_scope(services.session_factory) as session:
        access = Access.of(users=body.users, groups=body.groups, tags=body.tags)
        source = add_source(body.path, session=session, tenant=admin.tenant, name=body.name,
                            access=access)
        return SourcePublic.model_validate(source)


@router.get("/api/sources", response_model=list[SourcePublic])
def get_sources(services: ServicesDep, admin: AdminDep) -> list[SourcePublic]:
    """The tenant's sources with their document counts. Admin key."""
    with session_scope(services.session_factory) as session:
        return [SourcePublic.model_validate(s).model_copy(update={"documents": n})
                for s, n in list_sources(session=session, tenant=admin.tenant)]


@router.post("/api/sources/{ref}/sync", status_code=202, response_model=JobPublic)
async def sync(ref: str, services: ServicesDep, admin: AdminDep) -> JobPublic:
    """Sync a folder source (by id or name); returns the new job. Admin key."""
    store = _store(services)

    def plan() -> tuple[str, list[str]]:
        with session_scope(services.session_factory) as session:
            source = get_source(ref, session=session, tenant=admin.tenant)
            p = sync_source(source, session=session, store=store)
            return p.job.id, p.to_enqueue

    job_id, doc_ids = await asyncio.to_thread(plan)
    if doc_ids:
        await asyncio.to_thread(services.enqueue_documents, services.celery_app, doc_ids,
                                job_id=job_id)  # type: ignore[call-arg]
    return load_job(services, job_id, tenant=admin.tenant)


@router.delete("/api/sources/{ref}", status_code=204)
async def delete_source(ref: str, services: ServicesDep, admin: AdminDep) -> None:
    """Remove a source with its documents and their chunks. Admin key."""
    store = _store(services)

    def remove() -> list[str]:
        with session_scope(services.session_factory) as session:
            source = get_source(ref, session=session, tenant=admin.tenant)
            return remove_source(source, session=session, store=store)[1]

    promoted = await asyncio.to_thread(remove)
    if promoted:
        await asyncio.to_thread(services.enqueue_documents, services.celery_app, promoted)
