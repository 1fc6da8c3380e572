from __future__ import annotations

from fastapi import APIRouter

from api.deps import ServicesDep
from sirocco.db import session_scope
from traces.models import TracePublic
from traces.repository import get_trace

router = APIRouter(tags=["traces"])


@router.get("/api/traces/{trace_id}", response_model=TracePublic)
def read_trace(trace_id: str, services: ServicesDep) -> TracePublic:
    """One recorded interaction: query, retrieved chunks, prompt, answer, timings."""
    with session_scope(services.session_factory) as session:
        return TracePublic.model_validate(get_trace(session=session, trace_id=trace_id))
