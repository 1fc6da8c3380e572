"""``sirocco index``: the search index behind its alias (status, rebuild, swap)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli._utils import console, enqueue, open_store, session_factory, wait_for_job
from sirocco.settings import get_settings

index_app = typer.Typer(help="The search index (Qdrant collection behind an alias).",
                        no_args_is_help=True)


@index_app.command("status")
def status() -> None:
    """The live collection, the one being built (if any), and their sizes."""
    s = open_store(get_settings()).index_status()
    console.print(f"{s['alias']} -> {s['live']} ({s['live_points']} points)", markup=False)
    if s["building"]:
        console.print(f"building: {s['building']} ({s['building_points']} points)",
                      markup=False)


@index_app.command("rebuild")
def rebuild(
    wait: Annotated[bool, typer.Option(help="Wait and show progress.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 7200.0,
) -> None:
    """Re-ingest every document into a new collection with the current settings
    (embedding model, chunking, BM25), in the background; searches keep using
    the live collection until the alias swaps when the job is done."""
    from ingest.embedding.base import create_embedder
    from ingest.rebuild import start_rebuild
    from sirocco.db import session_scope

    settings = get_settings()
    dim = create_embedder(settings).dim
    store = open_store(settings)
    with session_scope(session_factory(settings)) as session:
        job, doc_ids = start_rebuild(session=session, store=store, dim=dim)
        job_id = job.id
    enqueue(settings, doc_ids, job_id)
    console.print(f"rebuild job {job_id}: {len(doc_ids)} document(s) queued")
    if not doc_ids:
        store.finish_rebuild()
        return
    if wait and wait_for_job(settings, job_id, timeout):
        raise typer.Exit(code=2)
    if wait:
        status()


@index_app.command("swap")
def swap() -> None:
    """Make the collection being built live now (after a rebuild with failures)."""
    live = open_store(get_settings()).finish_rebuild()
    console.print(f"live: {live}" if live else "no rebuild under way")


@index_app.command("abandon")
def abandon() -> None:
    """Drop the collection being built; the live one is untouched."""
    name = open_store(get_settings()).abandon_rebuild()
    console.print(f"dropped {name}" if name else "no rebuild under way")
