"""Export jobs: the ``exports`` rows around ``run_export``.

``create_export`` stores a queued job (the API enqueues it after the commit);
``execute_export`` is what the Celery task and the CLI run: it marks the job
running, writes the files under ``<exports_root>/<id>``, and ends it "done"
with its manifest or "failed" with the reason.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from sirocco.auth.models import User
from sirocco.db import session_scope, utcnow
from sirocco.errors import InvalidInputError, NotFoundError, SiroccoError
from traces.export.request import ExportRequest
from traces.export.service import FILES, MANIFEST, run_export
from traces.models import ExportJob

logger = logging.getLogger(__name__)

DOWNLOADABLE = (*FILES, MANIFEST)
ARCHIVE = "export.zip"


def create_export(*, session: Session, tenant: str, request: ExportRequest) -> ExportJob:
    """A queued export of ``tenant``'s traces (the request's tenant filter is
    forced to ``tenant``)."""
    request = request.model_copy(
        update={"filters": request.filters.model_copy(update={"tenant": tenant})})
    job = ExportJob(tenant=tenant, status="queued", format=request.format,
                    request=request.model_dump(mode="json"))
    session.add(job)
    session.flush()
    return job


def get_export(*, session: Session, export_id: str, tenant: str | None) -> ExportJob:
    """The export, if it exists (and belongs to ``tenant`` when given)."""
    job = session.get(ExportJob, export_id)
    if job is None or (tenant is not None and job.tenant != tenant):
        raise NotFoundError(f"export {export_id!r} not found")
    return job


def list_exports(*, session: Session, tenant: str, limit: int = 50) -> list[ExportJob]:
    """The tenant's exports, newest first."""
    stmt = (select(ExportJob).where(ExportJob.tenant == tenant)
            .order_by(ExportJob.created_at.desc(), ExportJob.id).limit(limit))
    return list(session.scalars(stmt))


def _user_names(session: Session, tenant: str) -> list[str]:
    return list(session.scalars(select(User.name).where(User.tenant == tenant)))


def execute_export(export_id: str, *, session_factory: sessionmaker[Session],
                   exports_root: Path, tokenizer_path: str | Path | None,
                   tokenizer: Any | None = None) -> ExportJob:
    """Run one export job to its end ("done" or "failed"); returns the row.
    Idempotent: a job already done is returned as it is. The tenant's user
    names are scrubbed too when the request asks for PII scrubbing."""
    with session_scope(session_factory) as session:
        job = get_export(session=session, export_id=export_id, tenant=None)
        if job.status == "done":
            return job
        job.status, job.error = "running", None
        request = ExportRequest.model_validate(job.request)
        names = _user_names(session, job.tenant) if request.options.scrub_pii else []
    out_dir = exports_root / export_id
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a half-written earlier attempt
    try:
        manifest = run_export(request, session_factory=session_factory, out_dir=out_dir,
                              tokenizer_path=tokenizer_path, tokenizer=tokenizer,
                              export_id=export_id, pii_names=names)
    except Exception as exc:
        message = exc.message if isinstance(exc, SiroccoError) else (
            f"internal error: {type(exc).__name__}: {exc}")
        logger.warning("export failed", exc_info=True, extra={"export_id": export_id})
        with session_scope(session_factory) as session:
            job = get_export(session=session, export_id=export_id, tenant=None)
            job.status, job.error, job.finished_at = "failed", message, utcnow()
        raise
    with session_scope(session_factory) as session:
        job = get_export(session=session, export_id=export_id, tenant=None)
        job.status, job.manifest, job.path = "done", manifest, str(out_dir)
        job.finished_at = utcnow()
        return job


def export_file(job: ExportJob, name: str | None) -> Path:
    """The file of a finished export to download: one of ``DOWNLOADABLE``, or
    (``name`` None) a zip archive of them all."""
    if job.status != "done" or not job.path:
        raise InvalidInputError(f"export {job.id!r} is {job.status}, not done")
    folder = Path(job.path)
    if name is not None:
        if name not in DOWNLOADABLE:
            raise InvalidInputError(f"unknown file {name!r}; valid: {', '.join(DOWNLOADABLE)}",
                                    param="file")
        path = folder / name
    else:
        path = folder / ARCHIVE
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for member in DOWNLOADABLE:
                    archive.write(folder / member, arcname=member)
            tmp.replace(path)
    if not path.exists():
        raise NotFoundError(f"the files of export {job.id!r} are gone")
    return path
