"""``sirocco serve``, ``sirocco worker`` and ``sirocco up``: the processes of a
deployment, and all of them at once on embedded defaults."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from cli._utils import console, quiet_engine_logs, setup_logging
from cli.ingest import register_and_enqueue
from cli.keys import bootstrap_admin_key
from sirocco.settings import Settings, get_settings


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Run the API server (starts the vLLM engine in this process)."""
    setup_logging()
    quiet_engine_logs()
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


def worker(
    concurrency: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
    stage: Annotated[
        list[str] | None,
        typer.Option(help="Consume only this stage's queue: parse, embed or exports "
                          "(repeatable)."),
    ] = None,
) -> None:
    """Run a Celery worker (Redis broker, or the embedded one); by default it
    consumes the parse, embed and exports queues."""
    setup_logging()
    from workers.app import run_worker

    run_worker(get_settings(), loglevel=loglevel, concurrency=concurrency, stages=stage)


def up(
    ingest_path: Annotated[
        Path | None, typer.Option("--ingest", help="Ingest this folder once up.")
    ] = None,
) -> None:
    """Everything on embedded defaults: migrate, prepare models, start a worker,
    ingest ``--ingest``, and serve the API in the foreground."""
    setup_logging()
    quiet_engine_logs()
    settings = get_settings()
    from llm.models import prepare_models
    from sirocco.db import upgrade_database

    upgrade_database(settings)
    # Printed this once: only its hash is stored.
    admin_key = bootstrap_admin_key(settings) if settings.auth.enabled else None
    prepare_models(settings)
    from ingest.embedding.onnx_export import prepare_embedding_model

    prepare_embedding_model(settings)
    # One worker per stage: parsing a large file never holds up embedding, and
    # an ingestion never holds up an export (their own queue and worker).
    # Warnings only from the workers: the job's progress is what a person follows.
    workers = [subprocess.Popen([sys.executable, "-m", "sirocco", "worker", "--stage", stage,
                                 "--loglevel", "warning"],
                                preexec_fn=_die_with_parent(
                                    nice=settings.celery.parse_nice if stage == "parse" else 0))
               for stage in ("parse", "embed", "exports")]
    try:
        if ingest_path is not None:
            _, queued = register_and_enqueue(settings, ingest_path.resolve(), "default")
            console.print(
                f"queued {queued} document(s) from {ingest_path}; the worker indexes them"
            )
        _print_welcome(settings, admin_key)
        serve(host=None, port=None)
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _die_with_parent(nice: int = 0) -> Callable[[], None] | None:
    """On Linux, a function for ``preexec_fn`` that makes the child get SIGTERM
    when ``sirocco up`` dies, even by SIGKILL (``PR_SET_PDEATHSIG``), so its
    workers never outlive it, and adds ``nice`` to its niceness; None
    elsewhere. libc is loaded here, before the fork, so the child only makes
    system calls."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_death_signal() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if nice:
            os.nice(nice)

    return set_death_signal


def _print_welcome(settings: Settings, admin_key: str | None) -> None:
    """The bootstrap admin key (if one was just made) and how to ask."""
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
