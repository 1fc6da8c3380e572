"""From stored traces to ``Example``: the prompt as the model saw it, what it
answered, the feedback verdict and the correction that replaces the answer."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from traces.citations import cited_chunk_ids
from traces.export.request import ExportFilters
from traces.models import Feedback, Trace

RAG_TEMPLATE = "rag-answer"
#: Traces are read in pages of this many rows.
PAGE = 200


@dataclass(slots=True)
class Example:
    """One trace, ready to become records of any format."""

    trace_id: str
    conversation_key: str
    tenant: str
    model: str | None
    created_at: datetime
    query: str
    #: OpenAI chat messages before the model's output.
    prompt: list[dict[str, Any]]
    #: The assistant message the model produced (``content``, maybe ``tool_calls``).
    output: dict[str, Any]
    tools: list[dict[str, Any]] | None
    #: Retrieved chunks; ``cited``: by a model-written, not unsupported citation;
    #: ``doubtful``: only by inferred or unsupported ones (``traces.citations``).
    chunks: list[dict[str, Any]] = field(default_factory=list)
    correction: str | None = None
    score: int = 0
    has_feedback: bool = False

    @property
    def negative(self) -> bool:
        return self.score < 0

    @property
    def positive(self) -> bool:
        return self.score > 0

    @property
    def has_tool_calls(self) -> bool:
        return bool(self.output.get("tool_calls")) or any(
            m.get("tool_calls") for m in self.prompt)

    def chosen(self) -> dict[str, Any]:
        """The assistant message to train on: the correction when there is one."""
        if self.correction:
            return {"role": "assistant", "content": self.correction}
        return dict(self.output)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def conversation_key(trace: Trace, first_user: str) -> str:
    """The split group: the conversation id, else the user and first question
    (the turns of one tool round trip share them)."""
    if trace.conversation_id:
        return trace.conversation_id
    raw = f"{trace.tenant}\x00{trace.user_hash or ''}\x00{first_user}"
    return "q-" + hashlib.sha256(raw.encode()).hexdigest()[:16]


def _verdict(feedback: list[Feedback], *, reviewed_only: bool) -> tuple[int, str | None, bool]:
    """(score, correction, any feedback counted) from a trace's feedback."""
    counted = [f for f in feedback
               if f.review_status != "rejected" and (not reviewed_only
                                                      or f.review_status == "approved")]
    score = sum(f.thumbs or 0 for f in counted) + sum(
        f.rating - 3 for f in counted if f.rating is not None)
    corrections = [f for f in sorted(counted, key=lambda f: _aware(f.created_at))
                   if f.correction]
    return score, (corrections[-1].correction if corrections else None), bool(counted)


def _message(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": row.role, "content": row.content}
    if row.tool_call_id:
        out["tool_call_id"] = row.tool_call_id
    if row.tool_calls:
        out["tool_calls"] = row.tool_calls
    return out


def _without_context(prompt: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    """The prompt with the numbered sources taken out: the RAG system prompt
    dropped and the question in place of the sources-and-question message."""
    out = [dict(m) for m in prompt]
    if out and out[0]["role"] == "system":
        out.pop(0)
    for message in reversed(out):
        if message["role"] == "user":
            if message["content"].rstrip().endswith(query.strip()):
                message["content"] = query
            break
    return out


def to_example(trace: Trace, *, include_context: bool, reviewed_only: bool) -> Example | None:
    """The example of one trace; None when the model produced nothing."""
    messages = [_message(m) for m in trace.messages]
    outputs = [i for i, m in enumerate(trace.messages) if m.is_output]
    if not outputs:
        return None
    prompt, output = messages[:outputs[-1]], messages[outputs[-1]]
    if not (output.get("content") or output.get("tool_calls")):
        return None
    if not include_context and trace.prompt_template == RAG_TEMPLATE:
        prompt = _without_context(prompt, trace.query)
    first_user = next((m["content"] for m in messages if m["role"] == "user"), trace.query)
    score, correction, has_feedback = _verdict(list(trace.feedback),
                                               reviewed_only=reviewed_only)
    tools = trace.tool_definitions.tools if trace.tool_definitions is not None else None
    # Traces recorded before inferred and unsupported citations stopped counting
    # have their chunks flagged cited; the stored citations say which still count.
    credited = cited_chunk_ids(trace.citations or ())
    doubtful = cited_chunk_ids(trace.citations or (), credited_only=False) - credited
    return Example(
        trace_id=trace.id, conversation_key=conversation_key(trace, first_user),
        tenant=trace.tenant, model=trace.model, created_at=_aware(trace.created_at),
        query=trace.query, prompt=prompt, output=output, tools=tools or None,
        chunks=[{"rank": c.rank, "chunk_id": c.chunk_id, "doc_id": c.doc_id, "text": c.text,
                 "in_prompt": c.in_prompt, "cited": c.cited and c.chunk_id in credited,
                 "doubtful": c.chunk_id in doubtful, "score": c.score}
                for c in trace.chunks],
        correction=correction, score=score, has_feedback=has_feedback)


def select_examples(*, session: Session, filters: ExportFilters, include_context: bool,
                    counts: dict[str, int]) -> Iterator[Example]:
    """The examples the filters let through, oldest first; ``counts`` gets
    how many traces were read and why some were left out."""
    stmt = (select(Trace).where(Trace.status != "running")
            .options(selectinload(Trace.messages), selectinload(Trace.chunks),
                     selectinload(Trace.feedback), selectinload(Trace.tool_definitions))
            .order_by(Trace.created_at, Trace.id))
    if filters.tenant is not None:
        stmt = stmt.where(Trace.tenant == filters.tenant)
    if filters.since is not None:
        stmt = stmt.where(Trace.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(Trace.created_at < filters.until)
    if filters.model is not None:
        stmt = stmt.where(Trace.model == filters.model)
    if filters.exclude_errors:
        stmt = stmt.where(Trace.status == "ok")
    if filters.consented_only:
        stmt = stmt.where(Trace.consent.is_(True))
    offset = 0
    while True:
        page = list(session.scalars(stmt.offset(offset).limit(PAGE)))
        if not page:
            return
        offset += len(page)
        for trace in page:
            counts["traces"] = counts.get("traces", 0) + 1
            example = to_example(trace, include_context=include_context,
                                 reviewed_only=filters.reviewed_only)
            reason = _left_out(example, filters)
            if reason is not None:
                counts[reason] = counts.get(reason, 0) + 1
                continue
            assert example is not None
            yield example
        session.expunge_all()


def _left_out(example: Example | None, filters: ExportFilters) -> str | None:
    if example is None:
        return "skipped_no_output"
    if filters.has_correction and not example.correction:
        return "skipped_no_correction"
    if filters.min_feedback is not None and (not example.has_feedback
                                             or example.score < filters.min_feedback):
        return "skipped_min_feedback"
    if filters.tool_calls_only and not example.has_tool_calls:
        return "skipped_no_tool_calls"
    return None
