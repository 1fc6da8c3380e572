"""Writing trace records to SQL from plain JSON payloads.

The recorder turns a question's outcome into two payloads (``start``,
``finish``) of JSON-safe values, so the same payload can be written at once,
queued for a writer thread, or spooled to a file and replayed later. Both
writes are idempotent: replaying a payload gives the same rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from sirocco.db import session_scope
from traces.models import (
    ToolDefinitionSet,
    Trace,
    TraceMessage,
    TraceRetrievedChunk,
    TraceSpan,
    TraceToolCall,
)

#: Scalar columns of ``traces`` a finish payload may set.
_TRACE_FIELDS = (
    "answer", "status", "error", "retrieved", "prompt", "citations", "model",
    "prompt_tokens", "completion_tokens", "total_tokens", "latency_ms", "ttft_ms",
    "finish_reason", "prompt_template", "prompt_template_version", "consent",
)
_IDENTITY = ("conversation_id", "tenant", "query", "user_hash", "app_release")


def tools_hash(tools: Sequence[dict[str, Any]]) -> str:
    """The sha256 of the canonical JSON of an OpenAI ``tools`` list."""
    canonical = json.dumps(list(tools), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def write_start(payload: dict[str, Any], *, session: Session) -> None:
    """Insert the "running" row of a trace (nothing when it exists already)."""
    if session.get(Trace, payload["id"]) is not None:
        return
    session.add(Trace(
        id=payload["id"], created_at=_when(payload["created_at"]), status="running",
        model=payload.get("model"), consent=bool(payload.get("consent")),
        **{k: payload.get(k) for k in _IDENTITY},
    ))


def save_tool_definitions(tools: Sequence[dict[str, Any]],
                          *, session_factory: sessionmaker[Session]) -> str:
    """Store ``tools`` once under their hash (in its own transaction: two traces
    may race to insert the same set); returns the hash."""
    digest = tools_hash(tools)
    try:
        with session_scope(session_factory) as session:
            if session.get(ToolDefinitionSet, digest) is None:
                session.add(ToolDefinitionSet(hash=digest, tools=list(tools)))
    except IntegrityError:
        pass  # another writer stored the same set first
    return digest


def write_finish(payload: dict[str, Any], *, session: Session) -> Trace:
    """Complete a trace and replace its child rows by the payload's; inserts
    the trace when its start was never stored. Returns the (flushed) row."""
    trace = session.get(Trace, payload["id"])
    if trace is None:
        trace = Trace(id=payload["id"], created_at=_when(payload["created_at"]),
                      **{k: payload.get(k) for k in _IDENTITY})
        session.add(trace)
    for key in _TRACE_FIELDS:
        if key in payload:
            setattr(trace, key, payload[key])
    trace.tool_definitions_hash = payload.get("tool_definitions_hash")
    session.flush()
    for model in (TraceMessage, TraceToolCall, TraceRetrievedChunk, TraceSpan):
        session.execute(delete(model).where(model.trace_id == trace.id))
    for position, message in enumerate(payload.get("messages", ())):
        session.add(TraceMessage(
            trace_id=trace.id, position=position, role=message["role"],
            content=message.get("content") or "", tool_call_id=message.get("tool_call_id"),
            tool_calls=message.get("tool_calls") or None,
            is_output=bool(message.get("is_output"))))
    for position, call in enumerate(payload.get("tool_calls", ())):
        session.add(TraceToolCall(
            trace_id=trace.id, position=position, call_id=call["id"], name=call["name"],
            arguments=call.get("arguments") or "", result=call.get("result"),
            status=call.get("status", "called"), latency_ms=call.get("latency_ms")))
    for chunk in payload.get("chunks", ()):
        session.add(TraceRetrievedChunk(
            trace_id=trace.id, rank=chunk["rank"], chunk_id=chunk["chunk_id"],
            doc_id=chunk["doc_id"], score=float(chunk["score"]),
            rerank_score=chunk.get("rerank_score"), in_prompt=bool(chunk.get("in_prompt")),
            cited=bool(chunk.get("cited")), text=chunk.get("text")))
    for span in payload.get("spans", ()):
        session.add(TraceSpan(
            id=span["id"], trace_id=trace.id, parent_id=span.get("parent_id"),
            kind=span["kind"], name=span["name"], started_at=_when(span["started_at"]),
            ended_at=_when(span.get("ended_at")), duration_ms=span.get("duration_ms"),
            status=span.get("status", "ok"), error=span.get("error"),
            attributes=span.get("attributes") or {}))
    session.flush()
    return trace


def conversation_tool_calls(prompt: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tool calls answered earlier in the conversation (assistant turns of
    ``prompt``), each with the result the following tool message gave."""
    results = {m.get("tool_call_id"): m.get("content") for m in prompt
               if m.get("role") == "tool"}
    calls = []
    for message in prompt:
        for call in message.get("tool_calls") or ():
            function = call.get("function", {})
            result = results.get(call.get("id"))
            calls.append({"id": call.get("id", ""), "name": function.get("name", ""),
                          "arguments": function.get("arguments", ""), "result": result,
                          "status": "called" if result is None else "ok"})
    return calls
