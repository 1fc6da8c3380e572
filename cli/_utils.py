"""Helpers the command groups share: the consoles, logging, the database
session factory, the vector store, and queueing and following ingestion jobs."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console

from sirocco.settings import Settings

if TYPE_CHECKING:
    from rich.progress import Progress
    from sqlalchemy.orm import Session, sessionmaker

    from ingest.jobs import JobReport
    from retrieval.store import Store

console = Console()
err_console = Console(stderr=True)


#: Sirocco's own loggers; everything else logs warnings only (onnxruntime's
#: quantizer alone writes ~400 INFO lines to the root logger while preparing).
PRODUCT_LOGGERS = ("cli", "api", "workers", "assistant", "ingest", "retrieval", "llm",
                   "traces", "sirocco")


def setup_logging(level: str = "INFO") -> None:
    """Log records to stderr (stdout is the command's output): Sirocco's own at
    ``level``, other libraries' from WARNING up."""
    logging.basicConfig(
        level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr)
    for name in PRODUCT_LOGGERS:
        logging.getLogger(name).setLevel(level)


def quiet_engine_logs() -> None:
    """vLLM logs INFO from each of its processes (~80 lines per start): warnings
    only, unless VLLM_LOGGING_LEVEL says otherwise. Must run before vLLM is
    imported (its processes inherit the variable); the CLI is the composition
    root, so it may set the environment its children read."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def fail(message: str) -> NoReturn:
    """Print ``error: message`` to stderr and exit with code 1."""
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    """Sessions on the configured database, migrated to head first."""
    from sirocco.db import make_engine, make_session_factory, upgrade_database

    upgrade_database(settings)
    return make_session_factory(make_engine(settings))


def open_store(settings: Settings) -> Store:
    """The configured vector store, from the store factory; close it when done."""
    from retrieval.factory import create_store

    return create_store(settings)


def enqueue(settings: Settings, doc_ids: Sequence[str], job_id: str | None) -> None:
    """Queue ``doc_ids`` for the workers (as items of ``job_id``); call it only
    after the commit, so a fast worker always finds the rows."""
    from workers.app import create_celery
    from workers.tasks import enqueue_documents

    if doc_ids:
        enqueue_documents(create_celery(settings), doc_ids, job_id=job_id)


def wait_for_job(settings: Settings, job_id: str, timeout_s: float) -> bool:
    """Show a live progress bar (with ETA) from the job's counts until it
    finishes, then its failed files and its state; True when some failed.
    Exits with code 1 after ``timeout_s`` seconds."""
    from sirocco.db import make_engine, make_session_factory

    factory = make_session_factory(make_engine(settings))
    deadline = time.monotonic() + timeout_s
    with _progress() as progress:
        bar = progress.add_task("ingest", total=None, counts="")
        while True:
            report = _report(factory, job_id, items=False)
            j = report.job
            progress.update(bar, total=j.total, completed=report.finished,
                            counts=f"failed {j.failed} skipped {j.skipped}")
            if j.finished_at is not None:
                break
            if time.monotonic() > deadline:
                fail(f"timed out after {timeout_s:.0f}s: {report.finished}/{j.total} finished; "
                     "is a worker running (`sirocco worker`)?")
            time.sleep(0.5)
    report = _report(factory, job_id, items=True)
    for item in report.items:
        if item.state == "failed":
            err_console.print(f"[red]failed[/red] {item.path}: {item.error}")
    console.print(f"job {job_id}: {j.state}")
    return j.failed > 0


def _progress() -> Progress:
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"),
                    TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)


def _report(factory: sessionmaker[Session], job_id: str, *, items: bool) -> JobReport:
    """The job's report; without ``items`` only its row (each progress tick:
    reading thousands of items twice a second cost the CLI a sixth of a core)."""
    from ingest.jobs import get_job, get_report

    with factory() as session:
        if not items:
            return get_job(session=session, job_id=job_id)
        return get_report(session=session, job_id=job_id)
