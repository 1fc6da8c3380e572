"""``sirocco jobs``: ingestion jobs (list, show, cancel, retry)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli._utils import console, enqueue, session_factory
from sirocco.settings import get_settings

jobs_app = typer.Typer(help="Ingestion jobs.", no_args_is_help=True)


@jobs_app.command("list")
def jobs_list(
    tenant: Annotated[str, typer.Option(help="Tenant whose jobs to show.")] = "default",
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
) -> None:
    """The tenant's jobs, newest first, with their counts."""
    from ingest.jobs import list_jobs

    with session_factory(get_settings())() as session:
        reports = list_jobs(session=session, tenant=tenant, state=state, limit=limit)
    for r in reports:
        j = r.job
        console.print(f"{j.id}  {j.kind:6} {j.state:9} {r.finished}/{j.total}  failed {j.failed}"
                      f"  {j.created_at:%Y-%m-%d %H:%M}", markup=False, highlight=False)


@jobs_app.command("show")
def jobs_show(job_id: str) -> None:
    """A job's state, counts and failed files."""
    from ingest.jobs import get_report

    with session_factory(get_settings())() as session:
        r = get_report(session=session, job_id=job_id)
    j = r.job
    console.print(f"{j.id} {j.kind} {j.state}: {r.finished}/{j.total} (done {j.done}, failed "
                  f"{j.failed}, skipped {j.skipped}, cancelled {j.cancelled})", markup=False)
    for item in r.items:
        console.print(f"  {item.state:9} {item.path} {item.error or ''}", markup=False)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str) -> None:
    """Cancel a job's queued items; running ones finish."""
    from ingest.jobs import cancel_job
    from sirocco.db import session_scope

    with session_scope(session_factory(get_settings())) as session:
        n = cancel_job(session=session, job_id=job_id)
    console.print(f"cancelled {n} queued item(s) of job {job_id}")


@jobs_app.command("retry")
def jobs_retry(job_id: str) -> None:
    """Queue a job's failed items again."""
    from ingest.jobs import retry_failed
    from sirocco.db import session_scope

    settings = get_settings()
    with session_scope(session_factory(settings)) as session:
        doc_ids = retry_failed(session=session, job_id=job_id)
    enqueue(settings, doc_ids, job_id)
    console.print(f"re-queued {len(doc_ids)} item(s) of job {job_id}")
