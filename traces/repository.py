"""Reading traces back (keyword-only, session passed in).

Readers outside the trace store (the API) pass a ``TraceViewer``: they get
only the traces it may read (``traces.access``); a trace it may not read is
"not found".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from sirocco.errors import InvalidInputError, NotFoundError
from traces.access import TraceViewer
from traces.models import Feedback, Trace, TraceToolCall

MAX_LIST_LIMIT = 500


@dataclass(frozen=True, slots=True)
class TraceFilter:
    """Narrows a trace listing: status ("ok", "error", "running"), feedback
    thumbs (-1 or 1 given by anyone), whether the model called tools, and a
    creation window."""

    status: str | None = None
    thumbs: int | None = None
    tools: bool | None = None
    since: datetime | None = None
    until: datetime | None = None


def get_trace(*, session: Session, trace_id: str, viewer: TraceViewer | None = None) -> Trace:
    """The trace with this id (one ``viewer`` may read, when given); raises
    ``NotFoundError`` otherwise."""
    trace = session.get(Trace, trace_id)
    if trace is None or (viewer is not None and not viewer.may_read(trace)):
        raise NotFoundError(f"trace {trace_id!r} not found")
    return trace


def list_traces(*, session: Session, limit: int = 50, tenant: str | None = None,
                viewer: TraceViewer | None = None,
                where: TraceFilter | None = None) -> list[Trace]:
    """The newest ``limit`` traces, newest first: of one tenant when given, only
    those ``viewer`` may read when given, narrowed by ``where``."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInputError(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    stmt = select(Trace).order_by(Trace.created_at.desc(), Trace.id).limit(limit)
    if tenant is not None:
        stmt = stmt.where(Trace.tenant == tenant)
    if viewer is not None:
        stmt = viewer.scope(stmt)
    w = where or TraceFilter()
    if w.status is not None:
        stmt = stmt.where(Trace.status == w.status)
    if w.thumbs is not None:
        stmt = stmt.where(exists().where(Feedback.trace_id == Trace.id,
                                         Feedback.thumbs == w.thumbs))
    if w.tools is not None:
        called = exists().where(TraceToolCall.trace_id == Trace.id)
        stmt = stmt.where(called if w.tools else ~called)
    if w.since is not None:
        stmt = stmt.where(Trace.created_at >= w.since)
    if w.until is not None:
        stmt = stmt.where(Trace.created_at < w.until)
    return list(session.scalars(stmt))
