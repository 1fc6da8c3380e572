"""Traces, feedback on answers, corrections and their review.

A trace is readable by the user who asked and by the tenant's admins and
reviewers (members of ``auth.reviewer_groups``); for anyone else it does not
exist (404), in listings too (``traces.access``). Feedback follows the same
rule: the asker rates their own answer, reviewers any of the tenant; one
vote per author per trace. The annotators' queue, reviews and exports need a
reviewer.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import PrincipalDep
from api.deps import ServicesDep, SettingsDep
from api.services import Services
from sirocco.db import session_scope
from sirocco.errors import PermissionDeniedError
from sirocco.principal import Principal
from sirocco.settings import Settings
from traces.access import TraceViewer
from traces.feedback import add_feedback, list_feedback, review_feedback
from traces.models import Trace
from traces.recorder import hash_user
from traces.repository import TraceFilter, get_trace, list_traces
from traces.schemas import (
    FeedbackCreate,
    FeedbackPublic,
    ReviewUpdate,
    TraceDetail,
    TracePublic,
)

router = APIRouter(tags=["traces"])

#: How long a read waits for the trace writer before answering 404.
FLUSH_WAIT_S = 5.0


def is_reviewer(principal: Principal, settings: Settings) -> bool:
    """Admins, and members of a reviewer group, review the tenant's traces."""
    return principal.is_admin or bool(set(settings.auth.reviewer_groups) & set(principal.groups))


def require_reviewer(principal: Principal, settings: Settings) -> None:
    """Refuse (403) callers that are neither admins nor reviewers."""
    if not is_reviewer(principal, settings):
        groups = " or ".join(repr(g) for g in settings.auth.reviewer_groups) or "(none set)"
        raise PermissionDeniedError(
            f"this needs an admin key or membership of a reviewer group: {groups}")


def viewer_of(principal: Principal, settings: Settings) -> TraceViewer:
    """The caller as a reader of traces, known by the pseudonym the recorder
    writes (``build_services`` gives the recorder the same secret as salt)."""
    return TraceViewer(
        tenant=principal.tenant, reviewer=is_reviewer(principal, settings),
        user_hash=hash_user(principal.user, tenant=principal.tenant,
                            salt=settings.auth.secret_key))


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
def get_traces(
    services: ServicesDep, principal: PrincipalDep, settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: Annotated[str | None, Query(pattern="^(ok|error|running)$")] = None,
    thumbs: Annotated[int | None, Query(ge=-1, le=1, description="-1 or 1: with such "
                                        "feedback")] = None,
    tools: Annotated[bool | None, Query(description="Only traces with (true) or "
                                        "without (false) tool calls")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[TracePublic]:
    """The newest traces the caller may read: their own, or the tenant's for
    admins and reviewers; narrowed by status, feedback, tool use and date."""
    where = TraceFilter(status=status, thumbs=thumbs or None, tools=tools, since=since,
                        until=until)
    viewer = viewer_of(principal, settings)
    if services.recorder is not None:
        # Traces are written in the background: a listing right after an
        # answer must include it (as reading it does, see _settled).
        services.recorder.flush(FLUSH_WAIT_S)
    with session_scope(services.session_factory) as session:
        return [TracePublic.model_validate(t) for t in list_traces(
            session=session, limit=limit, viewer=viewer, where=where)]


@router.get("/api/traces/{trace_id}", response_model=TraceDetail)
async def read_trace(trace_id: str, services: ServicesDep, principal: PrincipalDep,
                     settings: SettingsDep) -> TraceDetail:
    """One recorded interaction: query, retrieved chunks, prompt, answer, spans,
    messages, tool calls, feedback, timings (404 unless the caller asked it or
    is an admin or reviewer of its tenant)."""
    viewer = viewer_of(principal, settings)

    def load() -> TraceDetail:
        with session_scope(services.session_factory) as session:
            return TraceDetail.model_validate(
                get_trace(session=session, trace_id=trace_id, viewer=viewer))

    await _settled(services, trace_id)
    return await asyncio.to_thread(load)


@router.post("/api/traces/{trace_id}/feedback", status_code=201,
             response_model=FeedbackPublic)
async def post_feedback(trace_id: str, body: FeedbackCreate, services: ServicesDep,
                        principal: PrincipalDep, settings: SettingsDep) -> FeedbackPublic:
    """Thumbs up/down (with a reason), a 1-5 rating, a comment and/or a
    correction (the answer as it should have been) on one answer the caller
    may read (its asker, or a reviewer). Giving it again replaces the caller's
    earlier feedback on that answer."""
    viewer = viewer_of(principal, settings)

    def store() -> FeedbackPublic:
        with session_scope(services.session_factory) as session:
            feedback = add_feedback(session=session, trace_id=trace_id, viewer=viewer,
                                    data=body)
            return FeedbackPublic.model_validate(feedback)

    await _settled(services, trace_id)
    return await asyncio.to_thread(store)


@router.get("/api/feedback", response_model=list[FeedbackPublic])
def get_feedback_list(
    services: ServicesDep, principal: PrincipalDep, settings: SettingsDep,
    review_status: Annotated[str | None, Query(pattern="^(pending|approved|rejected)$")] = None,
    trace_id: str | None = None,
    has_correction: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[FeedbackPublic]:
    """The reviewers' queue: the tenant's feedback, newest first."""
    require_reviewer(principal, settings)
    with session_scope(services.session_factory) as session:
        return [FeedbackPublic.model_validate(f) for f in list_feedback(
            session=session, tenant=principal.tenant, review_status=review_status,
            trace_id=trace_id, has_correction=has_correction, limit=limit)]


@router.patch("/api/feedback/{feedback_id}/review", response_model=FeedbackPublic)
def patch_review(feedback_id: str, body: ReviewUpdate, services: ServicesDep,
                 principal: PrincipalDep, settings: SettingsDep) -> FeedbackPublic:
    """Approve or reject a piece of feedback (or set it back to pending)."""
    require_reviewer(principal, settings)
    reviewer = viewer_of(principal, settings).user_hash
    with session_scope(services.session_factory) as session:
        return FeedbackPublic.model_validate(review_feedback(
            session=session, feedback_id=feedback_id, tenant=principal.tenant, update=body,
            reviewer=reviewer))
