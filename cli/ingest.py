"""``sirocco ingest`` and ``sirocco sources``: documents queued for the
workers, once or from watched folders kept in sync."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli._utils import (
    console,
    enqueue,
    fail,
    open_store,
    session_factory,
    setup_logging,
    wait_for_job,
)
from sirocco.settings import Settings, get_settings

sources_app = typer.Typer(help="Watched folders and their sync.", no_args_is_help=True)


def register_and_enqueue(settings: Settings, path: Path, tenant: str) -> tuple[str, int]:
    """Register ``path`` as an "ingest" job, enqueue it; returns (job id, queued)."""
    from ingest.jobs import add_items, create_job, finish_if_complete
    from ingest.service import register_files
    from sirocco.db import session_scope

    with session_scope(session_factory(settings)) as session:
        docs = register_files([path], session=session, tenant=tenant)
        job = create_job(session=session, tenant=tenant, kind="ingest")
        queued = [d for d in docs if d.status == "queued"]
        add_items(job, queued, session=session)
        dups = [d for d in docs if d.status == "duplicate"]
        add_items(job, dups, session=session, state="skipped", error="duplicate content")
        finish_if_complete(session=session, job_id=job.id)
        job_id, doc_ids = job.id, [d.id for d in queued]
    enqueue(settings, doc_ids, job_id)
    return job_id, len(doc_ids)


def ingest(
    path: Annotated[Path, typer.Argument(help="A file or a folder (recursive).")],
    tenant: Annotated[str, typer.Option(help="Tenant that owns the documents.")] = "default",
    wait: Annotated[bool, typer.Option(help="Wait and show progress.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 1800.0,
) -> None:
    """Queue documents for ingestion by the workers."""
    setup_logging("WARNING")
    if not path.exists():
        fail(f"{path} does not exist")
    settings = get_settings()
    job_id, queued = register_and_enqueue(settings, path.resolve(), tenant)
    if not queued:
        console.print("nothing to do: every file is already indexed and unchanged")
        return
    console.print(f"queued {queued} document(s) as job {job_id}")
    if wait and wait_for_job(settings, job_id, timeout):
        raise typer.Exit(code=2)


@sources_app.command("add")
def sources_add(
    path: Annotated[Path, typer.Argument(help="The folder.")],
    name: Annotated[str | None, typer.Option(help="Name (default: the folder's).")] = None,
    tenant: Annotated[str, typer.Option(help="Tenant that owns it.")] = "default",
    user: Annotated[list[str] | None, typer.Option(help="A user who may see its documents "
                                                        "(repeatable).")] = None,
    group: Annotated[list[str] | None, typer.Option(help="A group that may see its documents "
                                                         "(repeatable).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag for its documents "
                                                       "(repeatable).")] = None,
) -> None:
    """Register a folder as a source; `sirocco sources sync NAME` ingests it.
    Without --user/--group everyone in the tenant sees its documents."""
    from ingest.service import Access
    from ingest.sources import add_source
    from sirocco.db import session_scope

    access = Access.of(users=user or (), groups=group or (), tags=tag or ())
    with session_scope(session_factory(get_settings())) as session:
        source = add_source(path, session=session, tenant=tenant, name=name, access=access)
        console.print(f"source {source.name} ({source.id}): {source.path}")


@sources_app.command("list")
def sources_list(tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
                 ) -> None:
    """The sources with their document counts."""
    from ingest.sources import list_sources

    with session_factory(get_settings())() as session:
        for s, n in list_sources(session=session, tenant=tenant):
            console.print(f"{s.id}  {s.tenant}/{s.name}  {s.kind}  {n} docs  {s.path or ''}",
                          markup=False, highlight=False)


@sources_app.command("sync")
def sources_sync(
    ref: Annotated[str, typer.Argument(help="Source name or id.")],
    tenant: Annotated[str | None, typer.Option(help="Tenant of the name.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait and show progress.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 1800.0,
) -> None:
    """Ingest new and changed files, delete documents whose file is gone."""
    setup_logging("WARNING")
    from ingest.sources import get_source, sync_source
    from sirocco.db import session_scope

    settings = get_settings()
    store = open_store(settings)
    try:
        with session_scope(session_factory(settings)) as session:
            plan = sync_source(get_source(ref, session=session, tenant=tenant),
                               session=session, store=store)
            job, doc_ids = plan.job, plan.to_enqueue
    finally:
        store.close()  # the worker needs the embedded store too
    enqueue(settings, doc_ids, job.id)
    console.print(f"job {job.id}: {len(doc_ids)} queued, {job.skipped} skipped, "
                  f"{job.removed} removed")
    if wait and doc_ids and wait_for_job(settings, job.id, timeout):
        raise typer.Exit(code=2)


@sources_app.command("remove")
def sources_remove(
    ref: Annotated[str, typer.Argument(help="Source name or id.")],
    tenant: Annotated[str | None, typer.Option(help="Tenant of the name.")] = None,
) -> None:
    """Delete a source, its documents and their chunks."""
    from ingest.sources import get_source, remove_source
    from sirocco.db import session_scope

    settings = get_settings()
    store = open_store(settings)
    try:
        with session_scope(session_factory(settings)) as session:
            n, promoted = remove_source(get_source(ref, session=session, tenant=tenant),
                                        session=session, store=store)
    finally:
        store.close()
    enqueue(settings, promoted, None)
    console.print(f"removed {ref} and {n} document(s)")


@sources_app.command("access")
def sources_access(
    ref: Annotated[str, typer.Argument(help="Source name or id.")],
    user: Annotated[list[str] | None, typer.Option(help="A user who may see its documents "
                                                        "(repeatable).")] = None,
    group: Annotated[list[str] | None, typer.Option(help="A group that may see its documents "
                                                         "(repeatable).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag (repeatable).")] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant of the name.")] = None,
) -> None:
    """Set who may see a source's documents (no --user/--group: the whole
    tenant) and their tags; the indexed chunks change at once."""
    from ingest.service import Access
    from ingest.sources import get_source, set_source_access
    from sirocco.db import session_scope

    settings = get_settings()
    store = open_store(settings)
    access = Access.of(users=user or (), groups=group or (), tags=tag or ())
    try:
        with session_scope(session_factory(settings)) as session:
            n, queued = set_source_access(get_source(ref, session=session, tenant=tenant),
                                          access, session=session, store=store)
    finally:
        store.close()
    enqueue(settings, queued, None)
    who = ", ".join(access.acl) if access.acl else "the whole tenant"
    console.print(f"{ref}: {n} document(s) now visible to {who}", markup=False)
