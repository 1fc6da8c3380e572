"""Recording traces so that none is lost, whatever happens to the answer.

``start`` records a "running" trace as soon as a question arrives; ``finish``
completes it with status "ok" or "error", whatever answer text or tool calls
exist by then, the prompt messages, retrieved chunks, spans and the tool
definitions offered. If the first write fails, ``finish`` inserts the row.

Two modes: synchronous (the default: each call writes before returning; tests
and CLI use it) and ``background=True`` (the API: calls only queue a payload
for ``traces.writer.TraceWriter``, which retries, spools to a file when the
database stays down, and drains on ``close``). Storage failures are logged
(with the trace id) and never raised: a broken trace table must not break
answering.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from sirocco import __version__
from sirocco.db import session_scope, utcnow
from traces.citations import cited_chunk_ids
from traces.models import SPAN_KINDS
from traces.schemas import TracePublic
from traces.store import (
    conversation_tool_calls,
    save_tool_definitions,
    write_finish,
    write_start,
)
from traces.writer import TraceWriter

logger = logging.getLogger(__name__)


def hash_user(user: str | None, *, tenant: str, salt: str = "") -> str | None:
    """A stable pseudonym of ``user`` within ``tenant`` (sha256 with ``salt``)."""
    if not user:
        return None
    return hashlib.sha256(f"{salt}\x00{tenant}\x00{user}".encode()).hexdigest()


@dataclass(slots=True)
class SpanRecord:
    """One timed step; ``attributes`` use OpenTelemetry GenAI names."""

    kind: str
    name: str
    started_at: datetime
    started: float
    attributes: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    parent_id: str | None = None
    ended_at: datetime | None = None
    duration_ms: int | None = None
    status: str = "ok"
    error: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {"id": self.id, "parent_id": self.parent_id, "kind": self.kind,
                "name": self.name, "started_at": self.started_at.isoformat(),
                "ended_at": self.ended_at.isoformat() if self.ended_at else None,
                "duration_ms": self.duration_ms, "status": self.status, "error": self.error,
                "attributes": self.attributes}


@dataclass(slots=True)
class TraceHandle:
    """An open trace: its id, identity, spans and the clocks for latency and TTFT."""

    trace_id: str
    query: str
    tenant: str
    conversation_id: str | None
    created_at: datetime
    user_hash: str | None = None
    consent: bool = False
    app_release: str | None = None
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    persisted: bool = False
    finished: bool = False
    spans: list[SpanRecord] = field(default_factory=list)

    def mark_first_token(self) -> None:
        """Note the time of the first output (only the first call counts)."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    @property
    def ttft_ms(self) -> int | None:
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.started) * 1000)

    def elapsed_ms(self) -> int:
        return round((time.perf_counter() - self.started) * 1000)

    def start_span(self, kind: str, name: str, **attributes: Any) -> SpanRecord:
        """Open a span of ``kind`` (retrieval, rerank, llm, tool, guardrail)."""
        if kind not in SPAN_KINDS:
            raise ValueError(f"unknown span kind {kind!r}; valid: {', '.join(SPAN_KINDS)}")
        span = SpanRecord(kind=kind, name=name, started_at=utcnow(),
                          started=time.perf_counter(), attributes=dict(attributes))
        self.spans.append(span)
        return span

    def end_span(self, span: SpanRecord, *, error: str | None = None,
                 **attributes: Any) -> None:
        """Close ``span`` (status "error" when ``error`` is given); only the
        first call counts."""
        if span.ended_at is not None:
            return
        span.ended_at = utcnow()
        span.duration_ms = round((time.perf_counter() - span.started) * 1000)
        span.attributes.update(attributes)
        if error is not None:
            span.status, span.error = "error", error

    def close_open_spans(self, error: str) -> None:
        """End every span still open as failed with ``error``."""
        for span in self.spans:
            if span.ended_at is None:
                self.end_span(span, error=error)


class TraceRecorder:
    """Writes traces through ``session_factory``; methods are synchronous (in
    background mode they only queue, so they are cheap to call from async code)."""

    def __init__(self, session_factory: sessionmaker[Session], *, background: bool = False,
                 spool_dir: Path | None = None, app_release: str | None = __version__,
                 user_salt: str = "", default_consent: bool = False) -> None:
        self._session_factory = session_factory
        self._app_release = app_release
        self._user_salt = user_salt
        self._default_consent = default_consent
        self._writer = (TraceWriter(self._write, spool_dir=spool_dir) if background else None)

    def start(
        self,
        query: str,
        *,
        tenant: str = "default",
        conversation_id: str | None = None,
        model: str | None = None,
        user: str | None = None,
        consent: bool | None = None,
    ) -> TraceHandle:
        """Open a trace and store it as "running". Never raises on storage errors."""
        handle = TraceHandle(
            trace_id=str(uuid.uuid4()), query=query, tenant=tenant,
            conversation_id=conversation_id, created_at=utcnow(),
            user_hash=hash_user(user, tenant=tenant, salt=self._user_salt),
            consent=self._default_consent if consent is None else consent,
            app_release=self._app_release,
        )
        payload = {**self._identity(handle), "model": model, "consent": handle.consent}
        if self._writer is not None:
            self._writer.submit("start", payload)
            handle.persisted = True
            return handle
        try:
            with session_scope(self._session_factory) as session:
                write_start(payload, session=session)
            handle.persisted = True
        except Exception:
            logger.exception("trace start not stored; will retry at finish",
                             extra={"trace_id": handle.trace_id})
        return handle

    def finish(
        self,
        handle: TraceHandle,
        *,
        answer: str = "",
        status: str = "ok",
        error: str | None = None,
        retrieved: Sequence[dict[str, Any]] = (),
        prompt: Sequence[dict[str, Any]] = (),
        citations: Sequence[dict[str, Any]] = (),
        model: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        tool_calls: Sequence[dict[str, Any]] = (),
        tools: Sequence[dict[str, Any]] | None = None,
        finish_reason: str | None = None,
        prompt_template: str | None = None,
        prompt_template_version: str | None = None,
    ) -> TracePublic | None:
        """Complete the trace (only the first call counts; later calls return None).

        ``retrieved``: ``{chunk_id, doc_id, score, rank}`` plus optionally
        ``text``, ``in_prompt``, ``rerank_score``; a chunk is stored as cited
        only through a model-written, not unsupported citation
        (``traces.citations``). ``tool_calls``: the calls the model made
        (``{id, name, arguments}``), kept even when ``answer`` is empty.
        Returns the stored trace, or None when it could not be stored (logged)
        or is being written in the background.
        """
        if status not in ("ok", "error"):
            raise ValueError(f"status must be 'ok' or 'error', got {status!r}")
        if handle.finished:
            return None
        handle.finished = True
        handle.close_open_spans(error or "not finished")
        payload = self._finish_payload(
            handle, answer=answer, status=status, error=error, retrieved=retrieved,
            prompt=prompt, citations=citations, model=model, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, tool_calls=tool_calls,
            finish_reason=finish_reason, prompt_template=prompt_template,
            prompt_template_version=prompt_template_version)
        if tools:
            payload["tools"] = list(tools)
        if self._writer is not None:
            self._writer.submit("finish", payload)
            return None
        try:
            public = self._write_finish(payload)
            handle.persisted = True
            return public
        except Exception:
            # Last resort: the log line carries what the row would have held.
            logger.exception(
                "trace not stored",
                extra={"trace_id": handle.trace_id, "trace_status": status,
                       "trace_error": error, "answer_chars": len(answer)},
            )
            return None

    def flush(self, timeout_s: float | None = 30.0) -> bool:
        """Wait for queued writes (background mode); True when all are done."""
        return True if self._writer is None else self._writer.flush(timeout_s)

    def close(self) -> None:
        """Drain and stop the writer (background mode); later calls write at once."""
        if self._writer is not None:
            self._writer.close()

    # -- payloads -------------------------------------------------------------

    def _identity(self, handle: TraceHandle) -> dict[str, Any]:
        return {"id": handle.trace_id, "created_at": handle.created_at.isoformat(),
                "conversation_id": handle.conversation_id, "tenant": handle.tenant,
                "query": handle.query, "user_hash": handle.user_hash,
                "app_release": handle.app_release}

    def _finish_payload(self, handle: TraceHandle, *, answer: str, status: str,
                        error: str | None, retrieved: Sequence[dict[str, Any]],
                        prompt: Sequence[dict[str, Any]], citations: Sequence[dict[str, Any]],
                        model: str | None, prompt_tokens: int | None,
                        completion_tokens: int | None, tool_calls: Sequence[dict[str, Any]],
                        finish_reason: str | None, prompt_template: str | None,
                        prompt_template_version: str | None) -> dict[str, Any]:
        cited = cited_chunk_ids(citations)
        output: dict[str, Any] = {"role": "assistant", "content": answer, "is_output": True}
        if tool_calls:
            output["tool_calls"] = [
                {"id": c["id"], "type": "function",
                 "function": {"name": c["name"], "arguments": c.get("arguments", "")}}
                for c in tool_calls]
        messages = [dict(m) for m in prompt]
        if answer or tool_calls:
            messages.append(output)
        total = (prompt_tokens + completion_tokens
                 if prompt_tokens is not None and completion_tokens is not None else None)
        return {
            **self._identity(handle),
            "answer": answer, "status": status, "error": error,
            "retrieved": [{k: r[k] for k in ("chunk_id", "doc_id", "score", "rank") if k in r}
                          for r in retrieved],
            "prompt": list(prompt), "citations": list(citations), "model": model,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": total, "latency_ms": handle.elapsed_ms(), "ttft_ms": handle.ttft_ms,
            "finish_reason": finish_reason, "prompt_template": prompt_template,
            "prompt_template_version": prompt_template_version, "consent": handle.consent,
            "messages": messages,
            "tool_calls": [*conversation_tool_calls(prompt),
                           *({"id": c["id"], "name": c["name"],
                              "arguments": c.get("arguments", ""), "status": "called"}
                             for c in tool_calls)],
            "chunks": [{**r, "cited": r.get("chunk_id") in cited} for r in retrieved],
            "spans": [s.to_payload() for s in handle.spans],
        }

    def _write(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "start":
            with session_scope(self._session_factory) as session:
                write_start(payload, session=session)
        else:
            self._write_finish(payload)

    def _write_finish(self, payload: dict[str, Any]) -> TracePublic:
        tools = payload.get("tools")
        if tools:
            payload["tool_definitions_hash"] = save_tool_definitions(
                tools, session_factory=self._session_factory)
        with session_scope(self._session_factory) as session:
            trace = write_finish(payload, session=session)
            return TracePublic.model_validate(trace)
