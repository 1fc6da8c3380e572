"""Reading traces back (keyword-only, session passed in)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from sirocco.errors import InvalidInputError, NotFoundError
from traces.models import Trace

MAX_LIST_LIMIT = 500


def get_trace(*, session: Session, trace_id: str) -> Trace:
    """The trace with this id; raises ``NotFoundError`` when there is none."""
    trace = session.get(Trace, trace_id)
    if trace is None:
        raise NotFoundError(f"trace {trace_id!r} not found")
    return trace


def list_traces(*, session: Session, limit: int = 50, tenant: str | None = None) -> list[Trace]:
    """The newest ``limit`` traces (of one tenant when given), newest first."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInputError(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    stmt = select(Trace).order_by(Trace.created_at.desc(), Trace.id).limit(limit)
    if tenant is not None:
        stmt = stmt.where(Trace.tenant == tenant)
    return list(session.scalars(stmt))
