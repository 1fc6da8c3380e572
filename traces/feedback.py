"""Feedback on answers (thumbs, rating, comment, correction) and its review.

Keyword-only functions on a session the caller owns. Feedback is given by a
``TraceViewer`` on a trace it may read (``traces.access``: the asker, or an
admin or reviewer of the tenant); anything else is "not found". Each author
has one piece of feedback of each kind per trace: giving it again replaces it.
Review functions take the caller's ``tenant``.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from sirocco.db import utcnow
from sirocco.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from traces.access import TraceViewer
from traces.models import Feedback
from traces.repository import get_trace
from traces.schemas import FeedbackCreate, ReviewUpdate

MAX_LIST_LIMIT = 500


def add_feedback(*, session: Session, trace_id: str, viewer: TraceViewer,
                 data: FeedbackCreate) -> Feedback:
    """Store ``viewer``'s feedback on a trace it may read, replacing its earlier
    feedback of the same kind there (one vote per author per trace; the review
    starts again). Annotator feedback needs a reviewer; a correction must
    differ from the answer; feedback on a trace still running is refused."""
    trace = get_trace(session=session, trace_id=trace_id, viewer=viewer)
    if data.source == "annotator" and not viewer.reviewer:
        raise PermissionDeniedError("annotator feedback needs an admin key or a reviewer group")
    if trace.status == "running":
        raise InvalidInputError(f"trace {trace_id!r} is still being answered", param="trace_id")
    correction = data.correction.strip() if data.correction else None
    if correction is not None and correction == trace.answer.strip():
        raise InvalidInputError("the correction is the same as the answer", param="correction")
    feedback = None
    if viewer.user_hash is not None:
        feedback = session.scalar(select(Feedback).where(
            Feedback.trace_id == trace.id, Feedback.source == data.source,
            Feedback.author_hash == viewer.user_hash))
    if feedback is None:
        feedback = Feedback(trace_id=trace.id, tenant=trace.tenant, source=data.source,
                            author_hash=viewer.user_hash)
        session.add(feedback)
    feedback.created_at = utcnow()
    feedback.thumbs, feedback.rating, feedback.reason = data.thumbs, data.rating, data.reason
    feedback.comment, feedback.correction = data.comment, correction or None
    feedback.review_status, feedback.reviewed_by = "pending", None
    feedback.reviewed_at, feedback.review_note = None, None
    session.flush()
    return feedback


def get_feedback(*, session: Session, feedback_id: str, tenant: str) -> Feedback:
    """One piece of feedback of ``tenant``; ``NotFoundError`` otherwise."""
    feedback = session.get(Feedback, feedback_id)
    if feedback is None or feedback.tenant != tenant:
        raise NotFoundError(f"feedback {feedback_id!r} not found")
    return feedback


def list_feedback(*, session: Session, tenant: str, review_status: str | None = None,
                  trace_id: str | None = None, has_correction: bool | None = None,
                  limit: int = 50) -> list[Feedback]:
    """Feedback of ``tenant``, newest first; narrowed by review status, trace,
    and whether it carries a correction (the annotators' queue)."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInputError(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    stmt = (select(Feedback).where(Feedback.tenant == tenant)
            .order_by(Feedback.created_at.desc(), Feedback.id).limit(limit))
    if review_status is not None:
        stmt = stmt.where(Feedback.review_status == review_status)
    if trace_id is not None:
        stmt = stmt.where(Feedback.trace_id == trace_id)
    if has_correction is not None:
        stmt = stmt.where(Feedback.correction.is_not(None) if has_correction
                          else Feedback.correction.is_(None))
    return list(session.scalars(stmt))


def review_feedback(*, session: Session, feedback_id: str, tenant: str, update: ReviewUpdate,
                    reviewer: str | None) -> Feedback:
    """Set the review status of a piece of feedback (annotators: approved
    corrections are what exports with ``reviewed_only`` use)."""
    feedback = get_feedback(session=session, feedback_id=feedback_id, tenant=tenant)
    feedback.review_status = update.review_status
    feedback.review_note = update.note
    feedback.reviewed_by = reviewer
    feedback.reviewed_at = utcnow() if update.review_status != "pending" else None
    session.flush()
    return feedback
