"""Celery task of trace exports: ``sirocco.traces.export`` re-fetches the
export job by id and runs it (``traces.export.jobs.execute_export``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from celery import Task
from kombu.exceptions import OperationalError as BrokerError

from sirocco.errors import NotFoundError, SiroccoError, UnavailableError
from sirocco.settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

EXPORT_TRACES = "sirocco.traces.export"


def export_tokenizer_path(settings: Settings) -> Path | None:
    """The served model's tokenizer folder (the configured model when it is a
    local path, else the bundled checkpoint); None when it is not on disk."""
    from llm.models import bundled_model_path

    try:
        path = (Path(settings.llm.model) if settings.llm.model
                else bundled_model_path(settings, settings.llm.bundled))
    except SiroccoError as exc:  # not prepared: records are not rendered or counted
        logger.warning("no tokenizer for exports", extra={"reason": exc.message})
        return None
    return path if (path / "tokenizer_config.json").exists() else None


def export_traces_task(self: Task, export_id: str) -> str:
    """Run export ``export_id``; returns its final status. Not retried: a
    failed export keeps its reason on the job and can be asked for again."""
    from traces.export.jobs import execute_export
    from workers.resources import worker_resources

    settings: Settings = getattr(self.app, "settings", None) or get_settings()
    factory = worker_resources(settings).session_factory
    try:
        job = execute_export(export_id, session_factory=factory,
                             exports_root=settings.exports_path,
                             tokenizer_path=export_tokenizer_path(settings))
    except NotFoundError:
        logger.warning("export vanished, nothing to do", extra={"export_id": export_id})
        return "missing"
    except Exception:
        return "failed"  # the job row holds the reason
    return job.status


def register_export_tasks(app: Celery) -> None:
    """Register the export task on ``app``."""
    app.task(name=EXPORT_TRACES, bind=True, ignore_result=True)(export_traces_task)


def enqueue_export(celery_app: Celery, export_id: str) -> str:
    """Queue export ``export_id`` (after the commit that created it); raises
    ``UnavailableError`` when the broker is down."""
    try:
        return str(celery_app.send_task(EXPORT_TRACES, args=[export_id]).id)
    except (BrokerError, OSError) as exc:
        raise UnavailableError(f"the task queue is unreachable ({exc})") from exc
