"""Sources: watched folders; a sync creates a job (``/api/jobs/{id}``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from api.auth import AdminDep
from api.deps import ServicesDep, SettingsDep
from api.routes.jobs import load_job
from api.schemas import ERROR_RESPONSES, JobPublic, SourceAccess, SourceCreate, SourcePublic
from api.services import Services
from ingest.service import Access
from ingest.sources import (
    add_source,
    allowed_folder,
    get_source,
    list_sources,
    remove_source,
    set_source_access,
    sync_source,
)
from retrieval.store import Store
from sirocco.db import session_scope
from sirocco.errors import UnavailableError

router = APIRouter(tags=["sources"], responses=ERROR_RESPONSES)


def _store(services: Services) -> Store:
    if services.store is None:
        raise UnavailableError("the vector store is not available")
    return services.store


@router.post("/api/sources", status_code=201, response_model=SourcePublic)
def create_source(body: SourceCreate, services: ServicesDep, admin: AdminDep,
                  settings: SettingsDep) -> SourcePublic:
    """Register a folder on the server as a source (sync it to ingest). Admin
    key; the folder must lie inside ``ingest.allowed_roots`` (403 otherwise,
    and always while that list is empty) and apart from the data folder."""
    folder = allowed_folder(body.path, roots=settings.ingest.allowed_roots,
                            data_dir=settings.data_dir)
    with session_scope(services.session_factory) as session:
        access = Access.of(users=body.users, groups=body.groups, tags=body.tags)
        source = add_source(folder, session=session, tenant=admin.tenant, name=body.name,
                            access=access)
        return SourcePublic.model_validate(source)


@router.put("/api/sources/{ref}/access", response_model=SourcePublic)
async def put_source_access(ref: str, body: SourceAccess, services: ServicesDep,
                            admin: AdminDep) -> SourcePublic:
    """Set who may see a source's documents, and their tags. Admin key. Takes
    effect on the indexed chunks at once: narrowing hides them from the next
    search, without a re-ingest."""
    store = _store(services)
    access = Access.of(users=body.users, groups=body.groups, tags=body.tags)

    def apply() -> tuple[SourcePublic, list[str]]:
        with session_scope(services.session_factory) as session:
            source = get_source(ref, session=session, tenant=admin.tenant)
            n, queued = set_source_access(source, access, session=session, store=store)
            return SourcePublic.model_validate(source).model_copy(update={"documents": n}), queued

    public, queued = await asyncio.to_thread(apply)
    if queued:  # duplicates the change split, after the commit
        await asyncio.to_thread(services.enqueue_documents, services.celery_app, queued)
    return public


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
