"""Traces, feedback on answers, corrections and their review.

Every route keeps to the caller's tenant (another tenant's trace is a 404).
Anyone with a key may rate an answer of their tenant; annotator feedback and
reviews need an admin key or membership of the ``annotators`` group.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import PrincipalDep
from api.deps import ServicesDep, SettingsDep
from api.services import Services
from sirocco.auth.keys import Principal
from sirocco.db import session_scope
from sirocco.errors import PermissionDeniedError
from traces.feedback import (
    add_feedback,
    list_feedback,
    review_feedback,
    tenant_trace,
)
from traces.models import Trace
from traces.recorder import hash_user
from traces.repository import list_traces
from traces.schemas import (
    FeedbackCreate,
    FeedbackPublic,
    ReviewUpdate,
    TraceDetail,
    TracePublic,
)

router = APIRouter(tags=["traces"])

#: Members of this group may annotate and review (besides admins).
ANNOTATORS_GROUP = "annotators"
#: How long a read waits for the trace writer before answering 404.
FLUSH_WAIT_S = 5.0


def require_annotator(principal: Principal) -> None:
    """Refuse (403) callers that are neither admins nor annotators."""
    if not (principal.is_admin or ANNOTATORS_GROUP in principal.groups):
        raise PermissionDeniedError(
            f"this needs an admin key or membership of the {ANNOTATORS_GROUP!r} group")


async def _settled(services: Services, trace_id: str) -> None:
    """Wait for the background trace writer when this trace is not written or
    not finished yet (its id reaches the client before its row may be)."""
    def pending() -> bool:
        with session_scope(services.session_factory) as session:
            trace = session.get(Trace, trace_id)
            return trace is None or trace.status == "running"

    if services.recorder is not None and await asyncio.to_thread(pending):
        await asyncio.to_thread(services.recorder.flush, FLUSH_WAIT_S)


@router.get("/api/traces", response_model=list[TracePublic])
def get_traces(services: ServicesDep, principal: PrincipalDep,
               limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[TracePublic]:
    """The caller's tenant's newest traces."""
    with session_scope(services.session_factory) as session:
        return [TracePublic.model_validate(t)
                for t in list_traces(session=session, limit=limit, tenant=principal.tenant)]


@router.get("/api/traces/{trace_id}", response_model=TraceDetail)
async def read_trace(trace_id: str, services: ServicesDep,
                     principal: PrincipalDep) -> TraceDetail:
    """One recorded interaction: query, retrieved chunks, prompt, answer, spans,
    messages, tool calls, feedback, timings (404 for another tenant's)."""
    def load() -> TraceDetail:
        with session_scope(services.session_factory) as session:
            trace = tenant_trace(session=session, trace_id=trace_id, tenant=principal.tenant)
            return TraceDetail.model_validate(trace)

    await _settled(services, trace_id)
    return await asyncio.to_thread(load)


@router.post("/api/traces/{trace_id}/feedback", status_code=201,
             response_model=FeedbackPublic)
async def post_feedback(trace_id: str, body: FeedbackCreate, services: ServicesDep,
                        principal: PrincipalDep, settings: SettingsDep) -> FeedbackPublic:
    """Thumbs up/down (with a reason), a 1-5 rating, a comment and/or a
    correction (the answer as it should have been) on one answer."""
    if body.source == "annotator":
        require_annotator(principal)
    author = hash_user(principal.user, tenant=principal.tenant, salt=settings.auth.secret_key)

    def store() -> FeedbackPublic:
        with session_scope(services.session_factory) as session:
            feedback = add_feedback(session=session, trace_id=trace_id,
                                    tenant=principal.tenant, data=body, author_hash=author)
            return FeedbackPublic.model_validate(feedback)

    await _settled(services, trace_id)
    return await asyncio.to_thread(store)


@router.get("/api/feedback", response_model=list[FeedbackPublic])
def get_feedback_list(
    services: ServicesDep, principal: PrincipalDep,
    review_status: Annotated[str | None, Query(pattern="^(pending|approved|rejected)$")] = None,
    trace_id: str | None = None,
    has_correction: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[FeedbackPublic]:
    """The annotators' queue: the tenant's feedback, newest first."""
    require_annotator(principal)
    with session_scope(services.session_factory) as session:
        return [FeedbackPublic.model_validate(f) for f in list_feedback(
            session=session, tenant=principal.tenant, review_status=review_status,
            trace_id=trace_id, has_correction=has_correction, limit=limit)]


@router.patch("/api/feedback/{feedback_id}/review", response_model=FeedbackPublic)
def patch_review(feedback_id: str, body: ReviewUpdate, services: ServicesDep,
                 principal: PrincipalDep, settings: SettingsDep) -> FeedbackPublic:
    """Approve or reject a piece of feedback (or set it back to pending)."""
    require_annotator(principal)
    reviewer = hash_user(principal.user, tenant=principal.tenant,
                         salt=settings.auth.secret_key)
    with session_scope(services.session_factory) as session:
        return FeedbackPublic.model_validate(review_feedback(
            session=session, feedback_id=feedback_id, tenant=principal.tenant, update=body,
            reviewer=reviewer))
